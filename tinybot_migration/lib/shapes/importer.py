"""Importing shapes.inc memories (docs/design.md §4) through the shared memory writer.

For the personalities of a run: each `<slug>_memories.json` is read and checked
(`export.parse_memories_file`), senders are mapped to personas (`mappings`), every kept record
gives one memory per sender with the legacy memory id (docs/design.md §3), memories not in the new DB yet
are embedded through the cache and written, and rejected records are recorded in
`shapes_rejects`. Every record ends up imported, deleted, duplicate or rejected, and the report
counts each per personality. The export is a memory source (`ShapesSource`) of the one memory
pipeline (`memories/pipeline.py`), which writes its memories or only prices them.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.ids import legacy_memory_id
from tinybot_migration.lib.memories.pipeline import write_memories
from tinybot_migration.lib.memories.writer import (
    SOURCE_SHAPES,
    MemorySourceReport,
    NewMemory,
    memory_ids,
)
from tinybot_migration.lib.personalities import personality_batches
from tinybot_migration.lib.postgres import Connect, jsonb_safe
from tinybot_migration.lib.progress import Progress
from tinybot_migration.lib.schema import bot_timestamp
from tinybot_migration.lib.shapes.export import (
    WHOLE_FILE,
    ParsedFile,
    RejectedRecord,
    ShapesRecord,
    file_fingerprint,
    memories_file,
    parse_memories_file,
    read_json,
    read_mappings,
)
from tinybot_migration.lib.shapes.mappings import (
    LinkChanges,
    SenderResolution,
    apply_links,
    memories_to_repoint,
    resolve_senders,
)

REFUSED_REASON = "the embedding provider refused the text"
# Personalities are imported a batch at a time, each batch about this many bytes of export files
# (one file is never split), so an import's memory follows the batch, not the export: at scale 100
# (936,400 records) a single pass held 3.1 GB.
FILE_BYTES_PER_BATCH = 64 << 20


@dataclass
class PersonalityAccount:
    """Where every record of one personality's file went."""

    source_file: str | None = None  # None: the export has no folder for this personality
    records: int = 0
    imported: int = 0
    deleted: int = 0
    duplicates: int = 0  # every memory it gives was given by an earlier record
    rejected: int = 0
    memories: int = 0  # distinct memories its imported records give (one per sender)
    written: int = 0
    already_present: int = 0
    file_error: str | None = None  # no record could be read: the file is one reject (WHOLE_FILE)

    @property
    def unaccounted(self) -> int:
        return self.records - self.imported - self.deleted - self.duplicates - self.rejected


@dataclass(frozen=True)
class RecordRef:
    source_file: str
    index: int
    record_id: str | None

    def __str__(self) -> str:
        return f"{self.source_file}[{self.index}]" + (f" ({self.record_id})" if self.record_id else "")


@dataclass
class ShapesImportReport(MemorySourceReport):
    export_dir: str | None = None
    mapping_file: str = "missing"  # "missing" or "<n> mappings"
    per_personality: dict[str, PersonalityAccount] = field(default_factory=dict)
    expected: dict[uuid.UUID, RecordRef] = field(default_factory=dict)  # memory id -> its first record
    rejected_records: dict[str, list[RejectedRecord]] = field(default_factory=dict)  # per source file
    senders: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)  # unmapped sender -> memories it has
    unmapped_reasons: dict[str, str] = field(default_factory=dict)
    links: LinkChanges = field(default_factory=LinkChanges)
    memories_to_relink: int = 0  # an estimate's: memories whose persona the mappings would change

    def total(self, name: str) -> int:
        return sum(getattr(a, name) for a in self.per_personality.values())

    def estimate_metadata(self, model: str) -> dict:
        """An estimate's figures (`pipeline.estimate_memories`), named as a run names what it did."""
        return {
            **self.estimate.estimate_metadata(model),
            "records": self.total("records"),
            "records_to_import": self.total("imported"),
            "records_deleted": self.total("deleted"),
            "records_duplicate": self.total("duplicates"),
            "records_rejected": self.total("rejected"),
            "memories_to_write": self.pending,
            "memories_already_present": self.already_present,
            "memories_to_relink": self.memories_to_relink,
            "unmapped_senders": len(self.unmapped),
        }


@dataclass
class _Plan:
    """The memories a file's kept records give, and which record gave each."""

    memories: list[NewMemory] = field(default_factory=list)
    new_by_record: dict[int, list[uuid.UUID]] = field(default_factory=dict)  # record index -> new ids
    all_by_record: dict[int, list[uuid.UUID]] = field(default_factory=dict)


class ShapesSource:
    """A shapes.inc export as a memory source (`pipeline.MemorySource`): one memory per sender of
    each kept record. Memories already present are looked up in `memories` (None: a new database
    without any), senders in `people` (the new database; the old one for an estimate before the
    first migration, whose discord ids are the same)."""

    stage = "shapes"

    def __init__(
        self,
        memories: psycopg.Connection | None,
        people: psycopg.Connection,
        export_dir: Path,
        personality_ids: dict[str, uuid.UUID],
        now: datetime | None = None,
    ) -> None:
        self.memories, self.people, self.export_dir = memories, people, export_dir
        self.now = bot_timestamp(now)
        self.report = ShapesImportReport(export_dir=str(export_dir), personality_ids=dict(personality_ids))
        self.mappings = read_mappings(export_dir)  # a malformed file stops the import here
        self.report.mapping_file = "missing" if self.mappings is None else f"{len(self.mappings):,} mappings"
        self.senders: set[str] = set()
        self._batch = _BatchPlan()

    def batches(self) -> list[dict[str, uuid.UUID]]:
        return file_batches(self.export_dir, self.report.personality_ids)

    def load_bound(self, batches: list[dict[str, uuid.UUID]]) -> None:
        return None  # records are only counted by parsing them

    def plan(self, batch: dict[str, uuid.UUID]) -> list[NewMemory]:
        """Parse the batch's files, resolve their senders and plan their memories (reads only)."""
        report = self.report
        files = _parse_files(self.export_dir, report, self.now, batch)
        senders = {s for parsed in files for s in parsed.senders}
        self.senders |= senders
        resolution = resolve_senders(self.people, senders, self.mappings, kept=self.memories is not None)
        report.unmapped_reasons |= dict(resolution.unmapped)
        plans = {p.source_file: _plan_file(p, batch[p.slug], resolution) for p in files}
        self._batch = _BatchPlan(files, plans, resolution)
        return _missing_memories(self.memories, plans, report, batch)

    def batch_line(self, number: int, batches: int, batch: dict, pending: int) -> str:
        report, files = self.report, self._batch.files
        label = f"shapes (batch {number} of {batches})" if batches > 1 else "shapes"
        return (
            f"{label}: {len(files)} files, {sum(f.total for f in files):,} records, "
            f"{len(self.senders):,} senders so far ({len(report.unmapped_reasons):,} unmapped), "
            f"{report.already_present:,} memories present, {pending:,} to write"
        )

    def apply(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        """The mapping rows the file gives, and the batch's memories re-pointed to them."""
        links = apply_links(conn, self._batch.resolution, list(batch.values()), self.now)
        report = self.report
        report.links.mappings_written += links.mappings_written
        report.links.memories_linked += links.memories_linked
        report.links.memories_repointed += links.memories_repointed
        report.links.repointed_senders += links.repointed_senders

    def foresee(self, batch: dict[str, uuid.UUID]) -> None:
        """The memories `apply` would re-point (none before the first migration: no memories yet)."""
        if self.memories is not None:
            self.report.memories_to_relink += memories_to_repoint(
                self.memories, self._batch.resolution.links, list(batch.values())
            )

    def rejected(self, memory: NewMemory, slug: str, reason: str) -> None:
        self._batch.refused[memory.content] = f"{REFUSED_REASON} ({reason})"

    def account(self, batch: dict[str, uuid.UUID]) -> None:
        _account(self._batch.files, self._batch.plans, self._batch.refused, self.report)
        self.report.senders = len(self.senders)

    def record(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        record_rejects(conn, self.export_dir, self._batch.files, self.report)


@dataclass
class _BatchPlan:
    """What planning a batch found, kept for writing and accounting for it."""

    files: list[ParsedFile] = field(default_factory=list)
    plans: dict[str, _Plan] = field(default_factory=dict)  # per source file
    resolution: SenderResolution | None = None
    refused: dict[str, str] = field(default_factory=dict)  # text -> why the provider refused it


def import_shapes_memories(
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    export_dir: Path,
    personality_ids: dict[str, uuid.UUID],
    *,
    connect: Connect | None = None,
    log: Progress | None = None,
    now: datetime | None = None,
) -> ShapesImportReport:
    """Import the records of `personality_ids` (slug -> id) from `export_dir` into the new DB `conn`;
    see the module docstring. A malformed mapping file raises `ShapesExportError` before anything
    is written."""
    source = ShapesSource(conn, conn, export_dir, personality_ids, now)
    return write_memories(source, conn, provider, connect=connect, log=log)


def file_batches(export_dir: Path, personality_ids: dict[str, uuid.UUID]) -> list[dict[str, uuid.UUID]]:
    """The personalities in batches of about FILE_BYTES_PER_BATCH bytes of memories files."""

    def file_bytes(slug: str, _: uuid.UUID) -> int:
        path = export_dir / memories_file(slug)
        return path.stat().st_size if path.is_file() else 0

    return personality_batches(personality_ids, file_bytes, FILE_BYTES_PER_BATCH)


def _parse_files(
    export_dir: Path, report: ShapesImportReport, now: datetime, personalities: dict[str, uuid.UUID]
) -> list[ParsedFile]:
    """The memories files of `personalities` (a personality without a folder has none)."""
    files = []
    for slug in personalities:
        account = report.per_personality[slug] = PersonalityAccount()
        if not (export_dir / slug).is_dir():
            continue
        parsed = parse_memories_file(export_dir, slug, now.timestamp())
        account.source_file, account.file_error = parsed.source_file, parsed.error
        account.records, account.deleted = parsed.total, parsed.deleted
        if parsed.error is not None:
            whole = RejectedRecord(
                WHOLE_FILE, None, parsed.error, file_fingerprint(export_dir / parsed.source_file)
            )
            report.rejected_records[parsed.source_file] = [whole]
        files.append(parsed)
    return files


def memory_of(
    record: ShapesRecord,
    sender: str,
    personality_id: uuid.UUID,
    persona_id: uuid.UUID | None,
    memory_id: uuid.UUID | None = None,
) -> NewMemory:
    """The memory one sender of a record gets (docs/design.md §4); `memory_id` when already computed."""
    return NewMemory(
        id=memory_id or legacy_memory_id(sender, personality_id, record.result),
        persona_id=persona_id,
        personality_id=personality_id,
        content=record.result,
        is_summarized=True,
        created_at=record.created_at,
        source_system=SOURCE_SHAPES,
        original_message_count=len(record.message_ids) or None,
        summary_type=record.summary_type,
        channel_id=record.channel_id,
        guild_id=record.guild_id,
        message_ids=list(record.message_ids),
        senders=list(record.senders),
        legacy_shapes_user_id=_sender_uuid(sender),
    )


_sender_uuid = functools.lru_cache(maxsize=65_536)(uuid.UUID)  # a sender has many memories


def _plan_file(parsed: ParsedFile, personality_id: uuid.UUID, resolution: SenderResolution) -> _Plan:
    """One memory per sender of each kept record, oldest record first: the same text for the same
    sender again is the same memory id, so a later record giving only such ids is a duplicate."""
    plan = _Plan()
    seen: set[uuid.UUID] = set()
    personality = str(personality_id)  # formatted once, not once per memory
    for record in sorted(parsed.records, key=lambda r: (r.created_at, r.index)):
        ids = plan.all_by_record[record.index] = []
        new = plan.new_by_record[record.index] = []
        for sender in record.senders:
            memory_id = legacy_memory_id(sender, personality, record.result)
            ids.append(memory_id)
            if memory_id in seen:
                continue
            seen.add(memory_id)
            new.append(memory_id)
            link = resolution.links.get(sender)
            persona_id = link.persona_id if link else None
            plan.memories.append(memory_of(record, sender, personality_id, persona_id, memory_id))
    return plan


def _missing_memories(
    conn: psycopg.Connection | None,
    plans: dict[str, _Plan],
    report: ShapesImportReport,
    personalities: dict[str, uuid.UUID],
) -> list[NewMemory]:
    """The planned memories (of `personalities`) not in the new DB yet, oldest first."""
    present = set() if conn is None else memory_ids(conn, list(personalities.values()), SOURCE_SHAPES)
    slug_of = {pid: slug for slug, pid in personalities.items()}
    pending = []
    for plan in plans.values():
        for memory in plan.memories:
            if memory.id in present:
                report.per_personality[slug_of[memory.personality_id]].already_present += 1
                report.already_present += 1
            else:
                pending.append(memory)
    report.pending += len(pending)
    pending.sort(key=lambda m: (m.created_at, m.id))
    return pending


def _account(
    files: Sequence[ParsedFile], plans: dict[str, _Plan], refused: dict[str, str], report: ShapesImportReport
) -> None:
    """Each kept record: imported (it gives a memory no earlier record gave), duplicate, or rejected
    (the provider refused its text); the memories of the first two are expected in the new DB."""
    for parsed in files:
        if parsed.error is not None:
            continue  # one reject for the whole file, made when it was read
        account = report.per_personality[parsed.slug]
        plan = plans[parsed.source_file]
        rejected = list(parsed.rejected)
        for record in parsed.records:
            if record.result in refused:
                rejected.append(RejectedRecord(record.index, record.record_id, refused[record.result], None))
                continue
            ref = RecordRef(parsed.source_file, record.index, record.record_id)
            for memory in plan.all_by_record[record.index]:
                report.expected.setdefault(memory, ref)
            if plan.new_by_record[record.index]:
                account.imported += 1
                account.memories += len(plan.new_by_record[record.index])
            else:
                account.duplicates += 1
        account.rejected = len(rejected)
        report.rejected_records[parsed.source_file] = sorted(rejected, key=lambda r: r.index)
        for memory in plan.memories:
            if memory.persona_id is None and memory.content not in refused:
                report.unmapped[str(memory.legacy_shapes_user_id)] += 1


def record_rejects(
    conn: psycopg.Connection, export_dir: Path, files: Sequence[ParsedFile], report: ShapesImportReport
) -> None:
    """Make `shapes_rejects` hold exactly the rejected records of these files (a record fixed in the
    export leaves it; a row that did not change is left as it is, its rejected_at too)."""
    rows = []
    for parsed in files:
        rejected = report.rejected_records[parsed.source_file]
        raw_of = _raw_records(export_dir, parsed.source_file, [r.index for r in rejected if r.raw is None])
        rows += [
            (
                parsed.source_file,
                r.index,
                r.record_id,
                parsed.slug,
                r.reason,
                Jsonb(jsonb_safe(r.raw if r.raw is not None else raw_of.get(r.index))),
            )
            for r in rejected
        ]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM tinybot_migration.shapes_rejects WHERE source_file = ANY(%s) AND (source_file, record_index) NOT IN"
            " (SELECT * FROM unnest(%s::text[], %s::integer[]))",
            ([p.source_file for p in files], [r[0] for r in rows], [r[1] for r in rows]),
        )
        cur.executemany(
            "INSERT INTO tinybot_migration.shapes_rejects (source_file, record_index, record_id, personality_slug, reason, raw_record)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source_file, record_index) DO UPDATE SET"
            " record_id = EXCLUDED.record_id, personality_slug = EXCLUDED.personality_slug,"
            " reason = EXCLUDED.reason, raw_record = EXCLUDED.raw_record, rejected_at = now()"
            " WHERE (shapes_rejects.record_id, shapes_rejects.personality_slug, shapes_rejects.reason,"
            " shapes_rejects.raw_record) IS DISTINCT FROM"
            " (EXCLUDED.record_id, EXCLUDED.personality_slug, EXCLUDED.reason, EXCLUDED.raw_record)",
            rows,
        )


def _raw_records(export_dir: Path, source_file: str, indexes: Sequence[int]) -> dict[int, object]:
    """Records of a file as they are in it (only needed for the rare text the provider refused)."""
    if not indexes:
        return {}
    document = read_json(export_dir / source_file)
    return {i: document[i] for i in indexes}
