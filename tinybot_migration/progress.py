"""How long-running work reports progress: a callable taking one line (an asset's `context.log.info`,
`print`, or nothing)."""

import re
from collections.abc import Callable

Log = Callable[[str], None]

# A memory writer's line after each chunk, read back by the CLI's progress display.
_CHUNK_LINE = re.compile(r"^\w+: ([\d,]+)/([\d,]+) (?:\w+ )?embedded and written \(.*?([\d,]+)/s\)$")


def chunk_line(
    source: str, done: int, total: int, cache_hits: int, requests: int, seconds: float, noun: str = ""
) -> str:
    """`memories: 1,000/2,135 embedded and written (0 cache hits, 3 requests, 2,400/s)`."""
    return (
        f"{source}: {done:,}/{total:,} {noun + ' ' if noun else ''}embedded and written ({cache_hits:,} cache "
        f"hits, {requests:,} requests, {done / seconds:,.0f}/s)"
    )


def chunk_progress(line: str) -> tuple[int, int, int] | None:
    """(done, total, rate) of a `chunk_line`, or None for any other line."""
    match = _CHUNK_LINE.match(line)
    return None if match is None else tuple(int(g.replace(",", "")) for g in match.groups())


# A line the CLI shows as it happens even when Dagster's lines go to the log file: something a person
# may want to act on (a provider retrying, a run waiting for another).
NOTICE_MARK = "⚠ "


def notice_line(text: str) -> str:
    return NOTICE_MARK + text


def notice_text(line: str) -> str | None:
    """The text of a `notice_line`, or None for any other line."""
    return line[len(NOTICE_MARK) :] if line.startswith(NOTICE_MARK) else None


def quiet(_line: str) -> None:
    """A `Log` that drops every line."""
