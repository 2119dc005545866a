"""How long-running work reports progress: a callable taking one line (an asset's `context.log.info`,
`print`, or nothing)."""

from collections.abc import Callable

Log = Callable[[str], None]


def quiet(_line: str) -> None:
    """A `Log` that drops every line."""
