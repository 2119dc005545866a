"""The demo shapes.inc export (docs/design.md §4): one `<slug>/<slug>_memories.json` per personality folder
plus `uuid-mappings.json`.

Each demo block (one scale unit) is exported by `export_block` from a `ShapesJob`: the block's
personalities and mapped users come from the database side, everything else from a random stream
of the block's own (`random.Random(f"tinybot-demo-shapes:{seed}:{block}")`). So a block's files do
not depend on where they are written: at larger scales a worker process (`ShapesExporter`) writes
them while the main process fills the database, with byte-identical results.

`dumps_records` is a specialised writer whose text equals
`json.dumps(records, ensure_ascii=False, indent=2)` (the tests prove it) at about half the cost.
"""

from __future__ import annotations

import bisect
import functools
import gc
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import threading
import time
import typing
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tinybot_migration.lib.demo_data import content

MAPPINGS_FILE = "uuid-mappings.json"

# Per block (scale unit).
SHAPES_FOLDERS_PER_BLOCK = 66
SHAPES_RECORDS_PER_BLOCK = 9_364

_ABSENT_SENDERS = 2  # unmapped: not in uuid-mappings.json
GHOST_SENDERS_PER_BLOCK = 2  # unmapped: in uuid-mappings.json with a discordId that no user has
_DUPLICATES_PER_BLOCK = 2
_EMPTY_RESULTS = ("", "  \n\t ")

# Shapes-era timestamps: 2023-06-01 .. 2024-10-01 UTC, in Unix milliseconds.
_SHAPES_START_MS = 1_685_577_600_000
_SHAPES_SPAN_MS = 488 * 86_400_000
_DISCORD_EPOCH_MS = 1_420_070_400_000

_MAPPING_NOTES = (
    "matched by discord id",
    "manual match by admin",
    "self-claimed via /link",
    "imported from shapes.inc",
)


@dataclass(frozen=True)
class ShapesJob:
    """What the database side decides about one block's export."""

    seed: int
    block: int
    personalities: list[tuple[str, str]]  # (slug, name) of every personality of the block
    mapped_users: list[tuple[str, str]]  # (discord_id, name) of users with a default persona
    ghost_discord_ids: list[str]  # discord ids that no user has, for unmapped-but-listed senders


@dataclass
class ShapesBlock:
    folders: dict[str, list[dict]]  # slug -> records, sorted
    mappings: dict[str, dict[str, str]]  # shapes user uuid -> {"discordId", "note"}
    senders: set[str]  # distinct senders appearing in records
    unmapped_senders: set[str]  # of those, the ones no user can be found for


@dataclass
class ShapesResult:
    """Counts of one exported block, and its share of uuid-mappings.json."""

    folders: int
    memories: int
    deleted: int
    group_memories: int
    senders: int
    unmapped_senders: int
    mappings: dict[str, dict[str, str]]


class _MessageIds:
    """Discord-style ids for one block, unique by construction: the block number and a sequence
    number fill the low 22 bits (6 + 16), the timestamp the rest."""

    def __init__(self, block: int) -> None:
        self._high = (block & 0x3F) << 16
        self._seq = 0

    def __call__(self, unix_ms: int) -> str:
        self._seq += 1
        if self._seq > 0xFFFF:
            raise RuntimeError("more than 65,535 shapes message ids in one demo block")
        return str(((unix_ms - _DISCORD_EPOCH_MS) << 22) | self._high | self._seq)


def build_shapes_block(job: ShapesJob) -> ShapesBlock:
    """Records for `SHAPES_FOLDERS_PER_BLOCK` of the job's personalities (one gets no folder).

    Each mapped user gets one shapes identity mapped to its discord id; of the unmapped senders,
    some are absent from the mappings and the others are mapped to the ghost discord ids.
    """
    rng = random.Random(f"tinybot-demo-shapes:{job.seed}:{job.block}")
    new_id = _MessageIds(job.block)

    def new_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    rnd = rng.random
    senders: list[str] = []
    mappings: dict[str, dict[str, str]] = {}
    names: dict[str, str] = {}
    unmapped: set[str] = set()
    for discord_id, name in job.mapped_users:
        sender = new_uuid()
        senders.append(sender)
        names[sender] = name
        mappings[sender] = {"discordId": discord_id, "note": rng.choice(_MAPPING_NOTES)}
    ghosts = iter(job.ghost_discord_ids)
    for i in range(_ABSENT_SENDERS + GHOST_SENDERS_PER_BLOCK):
        sender = new_uuid()
        senders.append(sender)
        unmapped.add(sender)
        names[sender] = rng.choice(content.NAMES)
        if i >= _ABSENT_SENDERS:  # listed, but mapped to a discord id that no user has
            mappings[sender] = {"discordId": next(ghosts), "note": "user left the server"}
    cumulative = list(itertools.accumulate(rng.uniform(0.3, 3.0) for _ in senders))
    total_weight = cumulative[-1]

    skipped = rng.randrange(len(job.personalities))
    with_folder = [p for i, p in enumerate(job.personalities) if i != skipped][:SHAPES_FOLDERS_PER_BLOCK]
    sizes = allocate(rng, SHAPES_RECORDS_PER_BLOCK, len(with_folder), minimum=3)

    folders: dict[str, list[dict]] = {}
    texts: set[tuple[str, str, str]] = set()
    for (slug, shape_name), size in zip(with_folder, sizes, strict=True):
        shape_id = new_uuid()
        channels = []
        for _ in range(rng.randrange(1, 4)):
            guild = "" if rnd() < 0.5 else new_id(_SHAPES_START_MS - 86_400_000 * 400)
            channels.append((new_id(_SHAPES_START_MS - 86_400_000 * 300), guild))
        records = []
        for _ in range(size):
            if rnd() < 0.05:
                record_senders = rng.sample(senders, 2 + int(rnd() * 3))
            else:
                record_senders = [senders[bisect.bisect(cumulative, rnd() * total_weight)]]
            channel_id, guild_id = channels[int(rnd() * len(channels))]
            start_ms = _SHAPES_START_MS + int(rnd() * _SHAPES_SPAN_MS)
            span = 1_000 + int(rnd() * 7_200_000)
            created_ms = start_ms + span + 500 + int(rnd() * 600_000)
            later = sorted([start_ms + int(rnd() * span) for _ in range(1 + int(rnd() * 4))])
            msg_ids = [new_id(start_ms), *map(new_id, later)]  # increasing, like discord's
            # Only the planted duplicates may share (slug, sender, text): redraw accidental ones.
            while True:
                result = content.memory_text(rng, shape_name, names[record_senders[0]], _date(start_ms))
                keys = [(slug, sender, result) for sender in record_senders]
                if not any(key in texts for key in keys):
                    texts.update(keys)
                    break
            records.append(
                {
                    "id": f"{msg_ids[0]}/{msg_ids[-1]}",
                    "shape_id": shape_id,
                    "senders": record_senders,
                    "result": result,
                    "summary_type": "manual" if rnd() < 0.1 else "automatic",
                    "deleted": rnd() < 0.03,
                    "metadata": {
                        "discord_channel_id": channel_id,
                        "discord_guild_id": guild_id,
                        "group": len(record_senders) > 1,
                        "senders": list(record_senders),
                        "msg_ids": msg_ids,
                        "start_ts": start_ms / 1000,
                        "end_ts": (start_ms + span) / 1000,
                        "created_at": created_ms / 1000,
                    },
                }
            )
        folders[slug] = records

    _add_quirks(rng, folders)
    for records in folders.values():
        records.sort(key=_record_order)
    appearing = {s for records in folders.values() for r in records for s in r["senders"]}
    return ShapesBlock(
        folders=folders,
        mappings=mappings,
        senders=appearing,
        unmapped_senders=appearing & unmapped,
    )


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")  # fmt: skip


@functools.cache
def _day(day: int) -> str:
    t = time.gmtime(day * 86_400)
    return f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year}"


def _date(unix_ms: int) -> str:
    return _day(unix_ms // 86_400_000)


def _record_order(record: dict) -> tuple[float, str]:
    return record["metadata"]["created_at"], record["id"]


def _add_quirks(rng: random.Random, folders: dict[str, list[dict]]) -> None:
    """Duplicates (same sender, slug and result) and empty / whitespace-only results."""

    touched: set[int] = set()  # each planted quirk gets records of its own

    def plain(record: dict) -> bool:
        return not record["deleted"] and not record["metadata"]["group"] and id(record) not in touched

    slugs = sorted(folders)
    for _ in range(_DUPLICATES_PER_BLOCK):
        while True:
            records = folders[rng.choice(slugs)]
            first, second = rng.sample(range(len(records)), 2)
            original, copy = records[first], records[second]
            if plain(original) and plain(copy):
                break
        touched.update((id(original), id(copy)))
        copy["senders"] = list(original["senders"])
        copy["metadata"]["senders"] = list(original["senders"])
        copy["result"] = original["result"]
        copy["summary_type"] = original["summary_type"]
    for empty in _EMPTY_RESULTS:
        while True:
            record = rng.choice(folders[rng.choice(slugs)])
            if plain(record):
                break
        touched.add(id(record))
        record["result"] = empty


def allocate(rng: random.Random, total: int, parts: int, *, minimum: int) -> list[int]:
    """Split `total` into `parts` skewed sizes (each >= minimum) that sum exactly to `total`."""
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(parts)]
    spare = total - minimum * parts
    if spare < 0:
        raise ValueError(f"cannot split {total} into {parts} parts of at least {minimum}")
    scale = spare / sum(weights)
    shares = [w * scale for w in weights]
    sizes = [int(s) for s in shares]
    # Largest remainders get the leftover units (ties by index: deterministic).
    leftover = spare - sum(sizes)
    order = sorted(range(parts), key=lambda i: (sizes[i] - shares[i], i))
    for i in order[:leftover]:
        sizes[i] += 1
    return [minimum + s for s in sizes]


# --- writing ----------------------------------------------------------------------------------

_encode = json.encoder.encode_basestring  # the C version when available; ensure_ascii=False form
_float = float.__repr__  # what json.dumps writes for a finite float


_BOOL = ("false", "true")


def _str_list(items: list[str], pad: str) -> str:
    if not items:
        return "[]"
    if len(items) == 1:
        return f"[\n{pad}  {_encode(items[0])}\n{pad}]"
    return f"[\n{pad}  " + f",\n{pad}  ".join(map(_encode, items)) + f"\n{pad}]"


def _record(record: dict) -> str:
    m = record.get("metadata")
    if not (
        list(record) == _RECORD_KEYS
        and type(m) is dict
        and list(m) == _METADATA_KEYS
        and type(record["deleted"]) is bool
        and type(m["group"]) is bool
        and type(m["start_ts"]) is float
        and type(m["end_ts"]) is float
        and type(m["created_at"]) is float
    ):
        # Not the shape this writer is specialised for: fall back to the standard encoder.
        text = json.dumps(record, ensure_ascii=False, indent=2)
        return "  " + text.replace("\n", "\n  ")
    return (
        "  {\n"
        f'    "id": {_encode(record["id"])},\n'
        f'    "shape_id": {_encode(record["shape_id"])},\n'
        f'    "senders": {_str_list(record["senders"], "    ")},\n'
        f'    "result": {_encode(record["result"])},\n'
        f'    "summary_type": {_encode(record["summary_type"])},\n'
        f'    "deleted": {_BOOL[record["deleted"]]},\n'
        '    "metadata": {\n'
        f'      "discord_channel_id": {_encode(m["discord_channel_id"])},\n'
        f'      "discord_guild_id": {_encode(m["discord_guild_id"])},\n'
        f'      "group": {_BOOL[m["group"]]},\n'
        f'      "senders": {_str_list(m["senders"], "      ")},\n'
        f'      "msg_ids": {_str_list(m["msg_ids"], "      ")},\n'
        f'      "start_ts": {_float(m["start_ts"])},\n'
        f'      "end_ts": {_float(m["end_ts"])},\n'
        f'      "created_at": {_float(m["created_at"])}\n'
        "    }\n"
        "  }"
    )


_RECORD_KEYS = ["id", "shape_id", "senders", "result", "summary_type", "deleted", "metadata"]
_METADATA_KEYS = [
    "discord_channel_id",
    "discord_guild_id",
    "group",
    "senders",
    "msg_ids",
    "start_ts",
    "end_ts",
    "created_at",
]


def dumps_records(records: list[dict]) -> str:
    """Same text as `json.dumps(records, ensure_ascii=False, indent=2)`, much faster."""
    if not records:
        return "[]"
    return "[\n" + ",\n".join(_record(r) for r in records) + "\n]"


def write_memories_file(folder: Path, slug: str, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}_memories.json"
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(dumps_records(records))
        f.write("\n")


def write_mappings_file(export_dir: Path, mappings: dict[str, dict[str, str]]) -> None:
    document = {"mappings": {key: mappings[key] for key in sorted(mappings)}}
    with open(export_dir / MAPPINGS_FILE, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(document, ensure_ascii=False, indent=2))
        f.write("\n")


# --- exporting blocks, in process or in a pool of worker processes -------------------------


def export_block(staging: Path, job: ShapesJob) -> ShapesResult:
    """Build one block's records and write its `<slug>/<slug>_memories.json` files."""
    block = build_shapes_block(job)
    for slug, records in block.folders.items():
        write_memories_file(staging / slug, slug, records)
    records = [r for rs in block.folders.values() for r in rs]
    return ShapesResult(
        folders=len(block.folders),
        memories=len(records),
        deleted=sum(r["deleted"] for r in records),
        group_memories=sum(r["metadata"]["group"] for r in records),
        senders=len(block.senders),
        unmapped_senders=len(block.unmapped_senders),
        mappings=block.mappings,
    )


def _worker_init() -> None:
    """Runs once in each worker process, before its first block."""
    gc.disable()  # millions of short-lived dicts (no cycles); a worker lives for one export only
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it calls abort()
    # A pool worker waits for work forever, even once the main process is gone (killed, out of
    # memory): this thread ends it then.
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _ready() -> None:
    """Nothing: submitted once per worker to start the workers before the first block."""


# "forkserver": a fresh, single-threaded server process imports this module (and, as by default,
# the caller's `__main__`) once; each worker is forked from it, ready to work. Not "fork": the
# caller may have threads (the COPY writer, Dagster, psycopg pools) whose locks a forked child
# would inherit mid-use. Not "spawn": each worker would be a fresh interpreter importing it all
# again (measured 0.15-0.2 s slower than forkserver at scale 10 on two cores, which the workers
# share with this process). The server then waits, idle, until the caller exits. Like spawn,
# forkserver imports the caller's `__main__` file (as `__mp_main__`), so a calling script keeps its
# top-level work under `if __name__ == "__main__":` (the CLI's entry point and every
# `benchmarks/*.py` do; `python -c`, `python -m` and pytest need nothing; a script piped into
# `python -` has no file to import: the workers cannot start).
_START_METHOD = "forkserver"


class ShapesExporter:
    """Exports blocks as they are submitted: in this process (`workers=0`), or in a pool of worker
    processes that run on other cores while this one fills the database. Blocks are independent,
    so where a block is exported does not change a byte."""

    def __init__(self, staging: Path, *, workers: int) -> None:
        self.staging = staging
        self._in_process: list[ShapesResult] = []
        self._futures: dict[Future[ShapesResult], int] = {}  # -> block number
        self._pool: ProcessPoolExecutor | None = None
        if workers and sys.executable:
            context = multiprocessing.get_context(_START_METHOD)
            # Read when the server starts (once per process): if another pool started it first,
            # the workers import this module themselves, which is only slower.
            context.set_forkserver_preload(["__main__", __name__])
            self._pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_worker_init
            )
            for _ in range(workers):  # start them now: their start overlaps the first blocks' build
                self._pool.submit(_ready)

    def submit(self, job: ShapesJob) -> None:
        if self._pool is None:
            self._in_process.append(export_block(self.staging, job))
            return
        for future, block in self._futures.items():  # stop early when a block already failed
            if future.done() and future.exception() is not None:
                self._fail(block, future.exception())
        try:
            self._futures[self._pool.submit(export_block, self.staging, job)] = job.block
        except BrokenProcessPool as error:
            self._fail(job.block, error)

    def finish(self) -> list[ShapesResult]:
        """Wait for the workers; the results of all blocks, in no particular order."""
        results = list(self._in_process)
        for future, block in self._futures.items():
            try:
                results.append(future.result())
            except Exception as error:  # any failure of a block ends the export
                self._fail(block, error)
        self.abort()
        return results

    def abort(self) -> None:
        """Drop the blocks not started and wait for those being written (a block takes well under
        a second), so that no worker writes into `staging` once this returns."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _fail(self, block: int, error: BaseException) -> typing.NoReturn:
        self.abort()
        if isinstance(error, BrokenProcessPool):
            raise RuntimeError(
                f"a shapes export worker process exited abruptly with block {block} pending (killed, out "
                "of memory, or failed to start: the worker's own error output, if any, is above)"
            ) from error
        raise RuntimeError(
            f"the shapes export worker failed on block {block}: {type(error).__name__}: {error}"
        ) from error
