"""What a landed Qdrant point says, read with the bot's writers in mind (../shared/QDRANT.md §1),
and why a point cannot stand for a memory at all.

A point is read once into a `LandedPoint`; `candidate_of` turns it into a `Candidate` (the memory
it would be, in the new DB's ids) or a rejection reason. The outcome of a candidate (matched,
imported, duplicate, superseded) needs the new DB and is decided in `outcomes.py`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from tinybot_migration.lib.embeddings.client import ZERO_NORM
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS

# Collection layouts the bot wrote: its live and mapped shapes.inc points per persona, unmapped
# shapes.inc senders per shapes user, and the layout before 2025-10-23 (per personality).
PERSONA, LEGACY, OLD_LAYOUT = "persona", "persona-legacy", "personality"
_PREFIXES = ((LEGACY, "persona-legacy-"), (PERSONA, "persona-"), (OLD_LAYOUT, "personality-"))
LEGACY_PERSONA_PREFIX = "legacy-"  # a shapes.inc point's personaId for an unmapped sender

# createdAt outside these bounds is absurd; in seconds (a known writer bug) it is read as ms, flagged.
EARLIEST_CREATED_AT = datetime(2020, 1, 1)
LATEST_AHEAD = timedelta(days=1)
SECONDS_FLAG = "createdAt was in seconds: read as milliseconds"
# The bot's regrouping into persona-* collections skipped these (first 50 characters).
REFUSAL_PREFIXES = ("I cannot generate", "I'm unable to", "I am unable to", "I can't generate")
REFUSAL_WINDOW = 50
# Longest values the bot's columns take (memories varchar widths).
_COLUMN_WIDTHS = {"channelId": 20, "guildId": 20, "sessionId": 255, "canonScope": 20, "summaryType": 50}


@dataclass(frozen=True)
class LandedPoint:
    collection: str
    point_id: str
    payload: dict
    vector: np.ndarray | None  # float32; None when the point has no unnamed dense vector
    vector_kind: str

    @property
    def ref(self) -> str:
        return f"{self.collection}/{self.point_id}"


@dataclass(frozen=True)
class Layout:
    kind: str | None  # PERSONA, LEGACY, OLD_LAYOUT; None: not a collection the bot wrote
    key: str  # the persona id, shapes user id or personality id in the name

    @classmethod
    def of(cls, collection: str) -> Layout:
        for kind, prefix in _PREFIXES:
            if collection.startswith(prefix):
                return cls(kind, collection[len(prefix) :])
        return cls(None, collection)


@dataclass(frozen=True)
class OldIds:
    """Old DB id → new DB id (text) for the two parents a point names, and unmapped shapes users
    mapped since (`shapes_persona_mappings`: shapes user → new persona id)."""

    personas: dict[str, str]
    personalities: dict[str, str]
    shapes_personas: dict[uuid.UUID, uuid.UUID]


@dataclass(frozen=True)
class Candidate:
    """A point that can stand for a memory: its persona (new id, or None for an unmapped shapes
    user), shapes user, personality, text and time as the bot's columns hold them."""

    point: LandedPoint
    layout: Layout
    persona_id: uuid.UUID | None
    shapes_user_id: uuid.UUID | None
    personality_id: uuid.UUID
    content: str
    created_at: datetime  # naive UTC, millisecond precision
    flag: str | None = None  # accepted with a remark (createdAt in seconds)

    def text(self, name: str) -> str | None:
        """A payload text field as the bot's columns take it: "" (kept by the shapes import) is None."""
        value = self.point.payload.get(name)
        return value if isinstance(value, str) and value != "" else None


def personality_key(payload: dict) -> str | None:
    """The old DB personality id a point names, or None."""
    value = payload.get("personalityId")
    return value if isinstance(value, str) else None


def candidate_of(point: LandedPoint, ids: OldIds, now: datetime) -> Candidate | str:
    """The memory a point stands for, or why it stands for none (the rejection reason)."""
    layout = Layout.of(point.collection)
    if layout.kind is None:
        return "not a collection the bot wrote (persona-*, persona-legacy-*, personality-*)"
    reason = vector_problem(point.vector, point.vector_kind)
    if reason is None:
        reason = content_problem(point.payload)
    if reason is None:
        reason = field_problem(point.payload)
    if reason is not None:
        return reason
    created = created_at_of(point.payload.get("createdAt"), now)
    if isinstance(created, str):
        return created
    moment, flag = created
    personality = _personality_of(point.payload, ids)
    if isinstance(personality, str):
        return personality
    owner = _owner_of(point, layout, ids)
    if isinstance(owner, str):
        return owner
    persona_id, shapes_user_id = owner
    return Candidate(
        point, layout, persona_id, shapes_user_id, personality, point.payload["content"], moment, flag
    )


def vector_problem(vector: np.ndarray | None, kind: str) -> str | None:
    if vector is None:
        return f"no unnamed dense vector ({kind})"
    if vector.shape != (EMBEDDING_DIMENSIONS,):
        return f"vector of {vector.size} dimensions, not {EMBEDDING_DIMENSIONS}"
    if not np.isfinite(vector).all():
        return "vector not finite (NaN or infinity)"
    if float(np.linalg.norm(vector)) < ZERO_NORM:
        return "zero vector"
    return None


def content_problem(payload: dict) -> str | None:
    if "content" not in payload:
        return "content missing"
    content = payload["content"]
    if not isinstance(content, str):
        return f"content is {type(content).__name__}, not text"
    if not content.strip():
        return "content empty"
    if "\x00" in content:
        return "content holds a NUL character (PostgreSQL text cannot)"
    return None


def field_problem(payload: dict) -> str | None:
    """A field too long for the bot's column (the insert would fail)."""
    for name, width in _COLUMN_WIDTHS.items():
        value = payload.get(name)
        if isinstance(value, str) and len(value) > width:
            return f"{name} of {len(value)} characters (the bot's column takes {width})"
    return None


def created_at_of(value: object, now: datetime) -> tuple[datetime, str | None] | str:
    """createdAt (integer ms since the epoch) as naive UTC, flagged when it was in seconds; or why not."""
    if value is None:
        return "createdAt missing"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"createdAt is {value!r}, not a number of milliseconds"
    latest = now + LATEST_AHEAD
    for scale, flag in ((1, None), (1000, SECONDS_FLAG)):
        moment = _from_ms(value * scale)
        if moment is not None and EARLIEST_CREATED_AT <= moment <= latest:
            return moment, flag
    return f"createdAt {value!r} is absurd (not between {EARLIEST_CREATED_AT:%Y-%m-%d} and {latest:%Y-%m-%d})"


def _from_ms(ms: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def _personality_of(payload: dict, ids: OldIds) -> uuid.UUID | str:
    key = personality_key(payload)
    if key is None:
        return "personalityId missing" if "personalityId" not in payload else "personalityId not text"
    new = ids.personalities.get(canonical_id(key))
    return uuid.UUID(new) if new else f"unknown personality {key} (not in the new database)"


def _owner_of(
    point: LandedPoint, layout: Layout, ids: OldIds
) -> tuple[uuid.UUID | None, uuid.UUID | None] | str:
    """(new persona id, shapes user id) of the point: from a persona-legacy collection's shapes user
    (its persona once mapped), else from the payload's personaId (the collection's for old points)."""
    if layout.kind == LEGACY:
        return _legacy_owner(layout.key, ids)
    key = point.payload.get("personaId")
    if isinstance(key, str) and key.startswith(LEGACY_PERSONA_PREFIX):
        return _legacy_owner(key[len(LEGACY_PERSONA_PREFIX) :], ids)
    if key is None and layout.kind == PERSONA:
        key = layout.key
    if not isinstance(key, str):
        return "personaId missing" if key is None else "personaId not text"
    new = ids.personas.get(canonical_id(key))
    return (uuid.UUID(new), None) if new else f"unknown persona {key} (not in the new database)"


def _legacy_owner(shapes_user: str, ids: OldIds) -> tuple[uuid.UUID | None, uuid.UUID] | str:
    try:
        user = uuid.UUID(shapes_user)
    except ValueError:
        return f"shapes.inc user {shapes_user!r} is not a UUID"
    return ids.shapes_personas.get(user), user


def canonical_id(key: str) -> str:
    """An id as the maps hold it (lower-case hyphenated UUID text); other text as it is."""
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return key


def is_refusal(content: str) -> bool:
    head = content[:REFUSAL_WINDOW]
    return any(prefix in head for prefix in REFUSAL_PREFIXES)
