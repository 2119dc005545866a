"""shapes.inc senders to personas: discord id (uuid-mappings.json) -> user -> default persona.

Every sender the file maps to a persona gets a row in `shapes_persona_mappings`; a sender the file
cannot map keeps a row an earlier run (or the bot) wrote. Memories of a sender that becomes mapped,
or whose mapping moves to another user, are re-pointed in place: their ids come from the shapes
user id, not the persona, so nothing is written again and nothing is embedded.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from tinybot_migration.lib.ids import deterministic_uuid, shapes_persona_mapping_seed
from tinybot_migration.lib.memories.writer import SOURCE_SHAPES
from tinybot_migration.lib.shapes.export import MAPPINGS_FILE, SenderMapping

VERIFICATION_STATUS = "unverified"  # the file's claim; the bot verifies a mapping with its user


@dataclass(frozen=True)
class PersonaLink:
    persona_id: uuid.UUID
    from_file: bool  # False: an existing row, kept as it is


@dataclass
class SenderResolution:
    links: dict[str, PersonaLink] = field(default_factory=dict)  # shapes user id -> persona
    unmapped: dict[str, str] = field(default_factory=dict)  # shapes user id -> why it has no persona
    recorded: dict[str, uuid.UUID] = field(default_factory=dict)  # persona of each existing mapping row


@dataclass
class LinkChanges:
    mappings_written: int = 0  # rows of shapes_persona_mappings inserted
    memories_linked: int = 0  # memories that had no persona and now have one
    memories_repointed: int = 0  # memories moved to another persona
    repointed_senders: list[str] = field(default_factory=list)  # "<sender>: <old> -> <new>"


def resolve_senders(
    conn: psycopg.Connection,
    senders: Collection[str],
    mappings: Mapping[str, SenderMapping] | None,
    kept: bool = True,
) -> SenderResolution:
    """Each sender's persona, or the reason it has none; with `kept`, a sender the file cannot
    map keeps the persona its `shapes_persona_mappings` row names."""
    mappings = mappings or {}
    listed = {s: mappings[s] for s in senders if s in mappings}
    personas = dict(
        conn.execute(
            "SELECT u.discord_id, d.persona_id FROM users u"
            " LEFT JOIN user_default_personas d ON d.user_id = u.id WHERE u.discord_id = ANY(%s)",
            (sorted({m.discord_id for m in listed.values()}),),
        ).fetchall()
    )
    recorded = dict(
        conn.execute(
            "SELECT shapes_user_id::text, persona_id FROM shapes_persona_mappings WHERE shapes_user_id = ANY(%s::uuid[])",
            (sorted(senders),),
        ).fetchall()
        if kept
        else ()
    )
    resolution = SenderResolution(recorded=recorded)
    for sender in sorted(senders):
        mapping = listed.get(sender)
        if mapping is not None and personas.get(mapping.discord_id) is not None:
            resolution.links[sender] = PersonaLink(personas[mapping.discord_id], from_file=True)
        elif sender in recorded:
            resolution.links[sender] = PersonaLink(recorded[sender], from_file=False)
        elif mapping is None:
            resolution.unmapped[sender] = f"not in {MAPPINGS_FILE}"
        elif mapping.discord_id not in personas:
            resolution.unmapped[sender] = f"discord id {mapping.discord_id} has no user"
        else:
            resolution.unmapped[sender] = (
                f"the user of discord id {mapping.discord_id} has no default persona"
            )
    return resolution


def apply_links(
    conn: psycopg.Connection,
    resolution: SenderResolution,
    personality_ids: Sequence[uuid.UUID],
    now: datetime,
) -> LinkChanges:
    """Write the mapping rows the file gives and re-point these personalities' memories, in one
    transaction. A row already naming the same persona is left as it is (its mapped_at too)."""
    from_file = {s: link for s, link in resolution.links.items() if link.from_file}
    before = resolution.recorded
    changes = LinkChanges()
    with conn.transaction():
        changes.mappings_written = _upsert_mappings(conn, from_file, now)
        changes.repointed_senders = [
            f"{sender}: persona {before[sender]} -> {link.persona_id}"
            for sender, link in sorted(from_file.items())
            if sender in before and before[sender] != link.persona_id
        ]
        changes.memories_linked, changes.memories_repointed = _repoint_memories(
            conn, resolution.links, personality_ids
        )
    return changes


def _upsert_mappings(conn: psycopg.Connection, links: Mapping[str, PersonaLink], now: datetime) -> int:
    if not links:
        return 0
    senders = sorted(links)
    rows = conn.execute(
        "INSERT INTO shapes_persona_mappings"
        " (id, shapes_user_id, persona_id, mapped_at, mapped_by, verification_status)"
        # mapped_by is the bot user who mapped it: NULL for a mapping read from the export's file.
        " SELECT id, shapes_user_id, persona_id, %s, NULL::uuid, %s"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[]) AS l(id, shapes_user_id, persona_id)"
        " ON CONFLICT (shapes_user_id) DO UPDATE SET persona_id = EXCLUDED.persona_id,"
        " mapped_at = EXCLUDED.mapped_at, mapped_by = EXCLUDED.mapped_by,"
        " verification_status = EXCLUDED.verification_status"
        " WHERE shapes_persona_mappings.persona_id IS DISTINCT FROM EXCLUDED.persona_id"
        " RETURNING (xmax = 0) AS inserted",
        (
            now,
            VERIFICATION_STATUS,
            [deterministic_uuid(shapes_persona_mapping_seed(s)) for s in senders],
            senders,
            [links[s].persona_id for s in senders],
        ),
    ).fetchall()
    return sum(inserted for (inserted,) in rows)


# The legacy memories of these personalities whose persona differs from their sender's link;
# parameters: senders, their personas, the source system, the personality ids.
_MEMORIES_TO_REPOINT = (
    "FROM memories m JOIN unnest(%s::uuid[], %s::uuid[]) AS l(shapes_user_id, persona_id)"
    " ON m.legacy_shapes_user_id = l.shapes_user_id"
    " WHERE m.source_system = %s AND m.personality_id = ANY(%s) AND m.persona_id IS DISTINCT FROM l.persona_id"
)


def _repoint_memories(
    conn: psycopg.Connection, links: Mapping[str, PersonaLink], personality_ids: Sequence[uuid.UUID]
) -> tuple[int, int]:
    """(memories given a persona, memories moved to another one), in one pass over the memories."""
    if not links:
        return 0, 0
    senders = sorted(links)
    moved = conn.execute(
        "WITH changed AS (SELECT m.id, m.persona_id IS NULL AS was_unmapped, l.persona_id"
        f" {_MEMORIES_TO_REPOINT} FOR UPDATE OF m)"
        " UPDATE memories SET persona_id = changed.persona_id FROM changed WHERE memories.id = changed.id"
        " RETURNING changed.was_unmapped",
        (senders, [links[s].persona_id for s in senders], SOURCE_SHAPES, list(personality_ids)),
    ).fetchall()
    linked = sum(was_unmapped for (was_unmapped,) in moved)
    return linked, len(moved) - linked


def memories_to_repoint(
    conn: psycopg.Connection, links: Mapping[str, PersonaLink], personality_ids: Sequence[uuid.UUID]
) -> int:
    """How many memories `apply_links` would re-point (for a dry run)."""
    if not links:
        return 0
    senders = sorted(links)
    return conn.execute(
        f"SELECT count(*) {_MEMORIES_TO_REPOINT}",
        (senders, [links[s].persona_id for s in senders], SOURCE_SHAPES, list(personality_ids)),
    ).fetchone()[0]
