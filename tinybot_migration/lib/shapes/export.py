"""Reading a shapes.inc export (docs/design.md §4): the memory files, each record checked, and the mappings.

A record becomes a `ShapesRecord` (importable), counts as deleted, or becomes a `RejectedRecord`
with the reason in words; a file that is not a JSON array gets an error naming it and the position.
Nothing here touches a database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tinybot_migration.lib.postgres import storable_text
from tinybot_migration.lib.schema import bot_timestamp
from tinybot_migration.lib.settings import DEMO_SHAPES_EXPORT_FOLDER, SHAPES_EXPORT_SETTING, tinybot_home

MAPPINGS_FILE = "uuid-mappings.json"
MEMORIES_FILE_SUFFIX = "_memories.json"
# memories.channel_id / guild_id are varchar(20), like every Discord snowflake.
DISCORD_ID_MAX_LENGTH = 20
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DISCORD_ID = re.compile(r"[0-9]{1,20}")


class ShapesExportError(ValueError):
    """The export cannot be read at all (a set path that does not exist, a malformed mapping file)."""


def export_folder(path: str | None) -> Path | None:
    """The folder to import: `path` (SHAPES_EXPORT_DIR) when set, which must be a folder; unset, the
    demo's `$TINYBOT_HOME/shapes_export` when it exists, else None (nothing to import, not an error)."""
    if path:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise ShapesExportError(f"{SHAPES_EXPORT_SETTING} is set to {folder}, which does not exist")
        if not folder.is_dir():
            raise ShapesExportError(f"{SHAPES_EXPORT_SETTING} is set to {folder}, which is not a folder")
        return folder.resolve()
    demo = tinybot_home() / DEMO_SHAPES_EXPORT_FOLDER
    return demo if demo.is_dir() else None


@dataclass(frozen=True)
class ShapesRecord:
    """One importable record: every field checked, senders canonical and distinct."""

    index: int  # position in the file's array, from 0
    record_id: str | None
    senders: tuple[str, ...]
    result: str
    summary_type: str | None
    channel_id: str | None  # "" in the export becomes None
    guild_id: str | None
    message_ids: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class RejectedRecord:
    index: int
    record_id: str | None
    reason: str
    raw: object  # the record as parsed


@dataclass
class ParsedFile:
    """One personality folder's memories file, read once."""

    slug: str
    source_file: str  # relative to the export folder
    records: list[ShapesRecord] = field(default_factory=list)  # importable (not deleted)
    deleted: int = 0
    deleted_texts: dict[str, str] = field(default_factory=dict)  # a deleted record's result -> its id
    rejected: list[RejectedRecord] = field(default_factory=list)
    total: int = 0  # records in the file
    error: str | None = None  # the file is not a JSON array: no record of it can be accounted for

    @property
    def senders(self) -> set[str]:
        return {sender for record in self.records for sender in record.senders}


@dataclass(frozen=True)
class SenderMapping:
    discord_id: str
    note: str | None


# The record_index of a reject that stands for a whole file no record of which could be read.
WHOLE_FILE = -1
FILE_HEAD_CHARACTERS = 200


def file_fingerprint(path: Path) -> dict:
    """What a whole-file reject keeps of a file it could not read: its size, SHA-256 and first
    characters (undecodable bytes replaced), so the reject shows which version of the file failed."""
    if not path.is_file():
        return {"file_size": None, "sha256": None, "head": None}
    data = path.read_bytes()
    return {
        "file_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "head": data[: FILE_HEAD_CHARACTERS * 4].decode("utf-8", "replace")[:FILE_HEAD_CHARACTERS],
    }


def read_json(path: Path) -> object:
    """A JSON file of the export, as UTF-8 (a leading BOM is harmless); raises UnicodeDecodeError
    or json.JSONDecodeError for the caller to report."""
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def memory_folders(export_dir: Path) -> list[str]:
    """The personality folders of an export (their names are slugs), sorted."""
    return sorted(p.name for p in export_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def memories_file(slug: str) -> str:
    return f"{slug}/{slug}{MEMORIES_FILE_SUFFIX}"


def parse_memories_file(export_dir: Path, slug: str, now: float | None = None) -> ParsedFile:
    """Read `<slug>/<slug>_memories.json`; `now` (Unix seconds) is where "in the future" starts."""
    source_file = memories_file(slug)
    parsed = ParsedFile(slug=slug, source_file=source_file)
    path = export_dir / source_file
    if not path.is_file():
        parsed.error = f"{source_file}: the folder {slug}/ has no {slug}{MEMORIES_FILE_SUFFIX}"
        return parsed
    try:
        document = read_json(path)
    except UnicodeDecodeError as error:
        parsed.error = f"{source_file}: not UTF-8 (byte {error.start}: {error.reason})"
        return parsed
    except json.JSONDecodeError as error:
        parsed.error = (
            f"{source_file}: not JSON: {error.msg} at line {error.lineno}, column {error.colno} "
            f"(character {error.pos})"
        )
        return parsed
    if not isinstance(document, list):
        parsed.error = f"{source_file}: the top level is {_json_type(document)}, not an array of records"
        return parsed
    parsed.total = len(document)
    future = (time.time() if now is None else now) + 1.0
    for index, raw in enumerate(document):
        record_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        try:
            record = _checked_record(index, raw, future)
        except _Rejected as rejected:
            parsed.rejected.append(RejectedRecord(index, record_id, str(rejected), raw))
            continue
        if record is None:
            parsed.deleted += 1
            if isinstance(raw.get("result"), str):
                parsed.deleted_texts.setdefault(raw["result"], record_id or f"#{index}")
        else:
            parsed.records.append(record)
    return parsed


def deleted_records(export_dir: Path, slug: str) -> dict[str, str]:
    """The texts of a personality's deleted records -> their ids (a Qdrant point holding one is a
    decision the export already made); none when its file is missing or unreadable."""
    return parse_memories_file(export_dir, slug).deleted_texts


def read_mappings(export_dir: Path) -> dict[str, SenderMapping] | None:
    """`uuid-mappings.json` as shapes user id -> mapping; None when the export has no such file.

    A malformed file is an error naming it (ShapesExportError): importing with wrong mappings
    would put memories on the wrong personas.
    """
    path = export_dir / MAPPINGS_FILE
    if not path.is_file():
        return None

    def malformed(problem: str) -> ShapesExportError:
        return ShapesExportError(f"{path} is malformed: {problem}; nothing was imported")

    try:
        document = read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise malformed(f"not JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("mappings"), dict):
        raise malformed('expected {"mappings": {<shapes user uuid>: {"discordId": "...", "note": "..."}}}')
    mappings: dict[str, SenderMapping] = {}
    for key, entry in document["mappings"].items():
        if not _UUID.fullmatch(key):
            raise malformed(f"the key {key!r} is not a UUID")
        if not isinstance(entry, dict):
            raise malformed(f"the entry of {key} is {_json_type(entry)}, not an object")
        discord_id, note = entry.get("discordId"), entry.get("note")
        if not isinstance(discord_id, str) or not _DISCORD_ID.fullmatch(discord_id):
            raise malformed(
                f"the discordId of {key} is {discord_id!r}: it must be a string of 1 to 20 digits "
                "(a JSON number loses digits)"
            )
        if note is not None and not isinstance(note, str):
            raise malformed(f"the note of {key} is {_json_type(note)}, not a string")
        canonical = key.lower()
        if canonical in mappings and mappings[canonical].discord_id != discord_id:
            raise malformed(f"{key} is listed twice with different discordIds")
        mappings[canonical] = SenderMapping(discord_id, note)
    return mappings


@dataclass(frozen=True)
class FileSurvey:
    """What the survey keeps of one memories file: its figures, not its records (an export at 100×
    production is a million records; holding them all took 1.5 GB)."""

    slug: str
    source_file: str
    total: int
    deleted: int
    rejected: int
    senders: frozenset[str]
    error: str | None
    record_id_hashes: np.ndarray  # int64, one per importable record with an id (8 bytes, not the id)

    @classmethod
    def of(cls, parsed: ParsedFile) -> FileSurvey:
        return cls(
            parsed.slug,
            parsed.source_file,
            parsed.total,
            parsed.deleted,
            len(parsed.rejected),
            frozenset(parsed.senders),
            parsed.error,
            np.array([record_id_hash(r.record_id) for r in parsed.records if r.record_id], dtype=np.int64),
        )


def record_id_hash(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class ExportSurvey:
    """What `shapes_export` reports: each folder's file read once, and the mapping file."""

    files: list[FileSurvey] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)  # slugs that match no personality
    mappings: int | None = None  # entries of uuid-mappings.json; None when it is missing or malformed
    mapping_error: str | None = None

    @property
    def errors(self) -> list[str]:
        return [p.error for p in self.files if p.error] + ([self.mapping_error] if self.mapping_error else [])

    def files_sharing_record_ids(self) -> dict[int, list[str]]:
        """Record ids (as hashes) that importable records of more than one folder hold -> the folders.
        Each folder's copy is imported into its own personality: an export defect worth a word."""
        owners = [np.full(len(f.record_id_hashes), i, dtype=np.int32) for i, f in enumerate(self.files)]
        if not owners:
            return {}
        hashes, folders = np.concatenate([f.record_id_hashes for f in self.files]), np.concatenate(owners)
        pairs = np.unique(np.stack([hashes, folders.astype(np.int64)], axis=1), axis=0)
        shared, counts = np.unique(pairs[:, 0], return_counts=True)
        shared = set(shared[counts > 1].tolist())
        found: dict[int, list[str]] = {}
        for record_hash, folder in pairs.tolist():
            if record_hash in shared:
                found.setdefault(record_hash, []).append(self.files[folder].slug)
        return found


def survey_export(export_dir: Path, known_slugs: set[str], now: float | None = None) -> ExportSurvey:
    survey = ExportSurvey()
    for slug in memory_folders(export_dir):
        survey.files.append(FileSurvey.of(parse_memories_file(export_dir, slug, now)))
        if slug not in known_slugs:
            survey.unknown_folders.append(slug)
    try:
        mappings = read_mappings(export_dir)
    except ShapesExportError as error:
        survey.mapping_error = str(error)
    else:
        survey.mappings = None if mappings is None else len(mappings)
    return survey


def shared_record_ids(
    export_dir: Path, survey: ExportSurvey, limit: int = 20
) -> tuple[int, list[tuple[str, list[str]]]]:
    """How many record ids more than one folder holds, and the first `limit` of them with their
    folders (read again from the files concerned: only their hashes were kept)."""
    shared = survey.files_sharing_record_ids()
    if not shared:
        return 0, []
    named: dict[int, str] = {}
    for slug in sorted({slug for slugs in shared.values() for slug in slugs}):
        for record in parse_memories_file(export_dir, slug).records:
            record_hash = record_id_hash(record.record_id) if record.record_id else None
            if record_hash in shared and len(named) < limit:
                named.setdefault(record_hash, record.record_id)
    return len(shared), sorted((record_id, shared[h]) for h, record_id in named.items())


# --- checking one record --------------------------------------------------------------------------


class _Rejected(ValueError):
    """Why a record cannot be imported, in words."""


def _checked_record(index: int, raw: object, future: float) -> ShapesRecord | None:
    """The record's fields, checked; None for a deleted record (skipped before any other check)."""
    if not isinstance(raw, dict):
        raise _Rejected(f"the record is {_json_type(raw)}, not an object")
    deleted = raw.get("deleted", False)
    if not isinstance(deleted, bool):
        raise _Rejected(f"deleted is {_json_type(deleted)}, not true or false")
    if deleted:
        return None
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        raise _Rejected("metadata is missing" if metadata is None else f"metadata is {_json_type(metadata)}")
    result = raw.get("result")
    if result is None:
        raise _Rejected("result is missing")
    _text("result", result)
    if not result.strip():
        raise _Rejected("result is empty" if not result else "result holds only whitespace")
    record = ShapesRecord(
        index=index,
        record_id=_optional_text("id", raw.get("id")),
        senders=_senders(raw, metadata),
        result=result,
        summary_type=_optional_text("summary_type", raw.get("summary_type")),
        channel_id=_discord_id("metadata.discord_channel_id", metadata.get("discord_channel_id")),
        guild_id=_discord_id("metadata.discord_guild_id", metadata.get("discord_guild_id")),
        message_ids=_message_ids(metadata.get("msg_ids")),
        created_at=_created_at(metadata.get("created_at"), future),
    )
    _unused_fields(raw, metadata)
    return record


def _unused_fields(raw: dict, metadata: dict) -> None:
    """The documented fields the import does not store must still have their types: a record
    whose fields are of the wrong type is not trusted for the others either."""
    _optional_text("shape_id", raw.get("shape_id"))
    group = metadata.get("group")
    if group is not None and not isinstance(group, bool):
        raise _Rejected(f"metadata.group is {_json_type(group)}, not true or false")
    for name in ("start_ts", "end_ts"):
        value = metadata.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _Rejected(f"metadata.{name} is {_json_type(value)}, not Unix seconds")
    listed = metadata.get("senders")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(s, str) for s in listed)):
        raise _Rejected("metadata.senders is not an array of strings")


def _senders(raw: dict, metadata: dict) -> tuple[str, ...]:
    senders = raw.get("senders", metadata.get("senders"))
    if senders is None:
        raise _Rejected("senders is missing")
    if not isinstance(senders, list):
        raise _Rejected(f"senders is {_json_type(senders)}, not an array")
    if not senders:
        raise _Rejected("senders is empty")
    canonical: list[str] = []
    for sender in senders:
        if not isinstance(sender, str) or not _UUID.fullmatch(sender):
            raise _Rejected(f"sender {sender!r} is not a UUID")
        if sender.lower() not in canonical:  # a sender listed twice still gets one memory
            canonical.append(sender.lower())
    return tuple(canonical)


def _created_at(value: object, future: float) -> datetime:
    if value is None:
        raise _Rejected("metadata.created_at is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(f"metadata.created_at is {_json_type(value)}, not Unix seconds")
    if math.isnan(value):
        raise _Rejected("metadata.created_at is NaN")
    if value < 0:
        raise _Rejected(f"metadata.created_at is negative ({value!r})")
    if value > future:
        raise _Rejected(f"metadata.created_at {value!r} is in the future")
    return bot_timestamp(datetime.fromtimestamp(value, UTC))


def _message_ids(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Rejected(f"metadata.msg_ids is {_json_type(value)}, not an array")
    for item in value:
        if not isinstance(item, str):
            raise _Rejected(f"metadata.msg_ids holds {_json_type(item)}, not only strings")
        _text("metadata.msg_ids", item)
    return tuple(value)


def _discord_id(name: str, value: object) -> str | None:
    text = _optional_text(name, value)
    if not text:
        return None  # "" means none (a DM has no guild)
    if len(text) > DISCORD_ID_MAX_LENGTH:
        raise _Rejected(
            f"{name} is {len(text)} characters long, more than a Discord id's {DISCORD_ID_MAX_LENGTH}"
        )
    return text


def _optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    _text(name, value)
    return value


def _text(name: str, value: object) -> None:
    """A string PostgreSQL can store (no NUL, valid Unicode), or a rejection naming the field."""
    if not isinstance(value, str):
        raise _Rejected(f"{name} is {_json_type(value)}, not a string")
    if storable_text(value) is None:
        raise _Rejected(
            f"{name} holds a NUL character or invalid Unicode, which PostgreSQL text cannot store"
        )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
