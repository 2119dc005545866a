"""The import on a real new database through the real `openai` client and the local server:
one memory per sender, personas through the mappings, every record accounted for, re-runs that
change nothing, re-linking without a request, and a dry run that writes and calls nothing."""

import json
import uuid

import psycopg
import pytest

from tinybot_migration.lib.embeddings.batches import MAX_TOKENS_PER_INPUT, truncate_for_embedding
from tinybot_migration.lib.ids import (
    MEMORY_NAMESPACE,
    content_hash,
    deterministic_uuid,
    shapes_persona_mapping_seed,
)
from tinybot_migration.lib.memories.pipeline import estimate_memories
from tinybot_migration.lib.personalities import personality_ids_for
from tinybot_migration.lib.shapes.checks import every_record_accounted_for
from tinybot_migration.lib.shapes.export import ShapesExportError
from tinybot_migration.lib.shapes.importer import ShapesSource, import_shapes_memories
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for
from tinybot_migration_tests.helpers.shapes_exports import SENDERS, T0, ShapesExport, record

MAPPED, SECOND, UNLISTED, GHOST = SENDERS[:4]


@pytest.fixture
def export(new_db, tmp_path) -> ShapesExport:
    shapes = ShapesExport(tmp_path / "export", new_db)
    shapes.person("1001")
    shapes.person("1002", name="Other")
    shapes.map(MAPPED, "1001")
    shapes.map(SECOND, "1002")
    shapes.map(GHOST, "9999")  # a discord id no user has
    return shapes


@pytest.fixture
def server():
    with OpenAITestServer() as test_server:
        yield test_server


def import_all(export: ShapesExport, server, slugs=("luna",), **options):
    conn = export.conn
    return import_shapes_memories(
        conn, client_for(server), export.folder, personality_ids_for(conn, list(slugs)), **options
    )


def estimate_all(export: ShapesExport, server, slugs=("luna",)):
    """What importing `slugs` would write and cost, reading only (the memory bill's way)."""
    conn = export.conn
    source = ShapesSource(conn, conn, export.folder, personality_ids_for(conn, list(slugs)))
    return estimate_memories(source, conn, client_for(server))


def rows(conn, table: str, order: str = "1, 2") -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def memories(conn) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM memories ORDER BY legacy_shapes_user_id, created_at, content"
        ).fetchall()


def test_a_group_memory_gives_one_memory_per_sender_with_every_field(export, server):
    group = record([MAPPED, UNLISTED, GHOST], "we planned a trip 🏔️", seconds=10, guild="", channel="")
    group["summary_type"] = "manual"
    export.write("luna", [group])
    report = import_all(export, server)
    luna = export.personality("luna")
    got = memories(export.conn)
    assert len(got) == 3 and report.memories_written == 3
    assert len(server.requests) == 1 and server.requests[0] == ["we planned a trip 🏔️"]  # one text, once
    by_sender = {str(m["legacy_shapes_user_id"]): m for m in got}
    assert by_sender[MAPPED]["persona_id"] == export.person("1001")
    assert by_sender[UNLISTED]["persona_id"] is None and by_sender[GHOST]["persona_id"] is None
    for sender, memory in by_sender.items():
        assert memory["id"] == uuid.uuid5(
            MEMORY_NAMESPACE, f"{sender}:{luna}:{content_hash(memory['content'])}"
        )
        assert memory["source_system"] == "shapes-inc" and memory["is_summarized"] is True
        assert (
            memory["summary_type"] == "manual" and memory["channel_id"] is None and memory["guild_id"] is None
        )
        assert memory["created_at"] == T0.replace(second=10)
        assert memory["senders"] == [MAPPED, UNLISTED, GHOST]
        assert memory["message_ids"] == ["900000000000000001", "900000000000000002"]
        assert memory["personality_id"] == luna and len(memory["embedding"].to_list()) == 1536
    assert report.unmapped == {UNLISTED: 1, GHOST: 1}
    assert report.unmapped_reasons == {
        UNLISTED: "not in uuid-mappings.json",
        GHOST: "discord id 9999 has no user",
    }
    account = report.per_personality["luna"]
    assert (account.records, account.imported, account.memories) == (1, 1, 3)


def test_mapped_senders_get_a_deterministic_mapping_row_and_ghosts_none(export, server):
    export.write("luna", [record([MAPPED, GHOST], "a"), record([SECOND], "b", seconds=5)])
    report = import_all(export, server)
    mapped = rows(export.conn, "shapes_persona_mappings", "shapes_user_id")
    assert [(str(r[1]), r[2]) for r in mapped] == [
        (MAPPED, export.person("1001")),
        (SECOND, export.person("1002", "Other")),
    ]
    for row in mapped:
        assert row[0] == deterministic_uuid(shapes_persona_mapping_seed(str(row[1])))
        assert row[3] is not None and row[5] == "unverified"
        assert row[4] is None  # mapped_by is the bot user who mapped it: nobody, for the export's file
    assert report.links.mappings_written == 2


def test_a_user_without_a_default_persona_leaves_its_sender_unmapped(export, server):
    export.person("1003", default_persona=False)
    export.map(UNLISTED, "1003")
    export.write("luna", [record([UNLISTED], "alone")])
    report = import_all(export, server)
    assert report.unmapped_reasons[UNLISTED] == "the user of discord id 1003 has no default persona"
    assert rows(export.conn, "shapes_persona_mappings") == []


def test_every_record_is_accounted_for_and_rejects_are_recorded_with_the_raw_record(export, server):
    bad = record([MAPPED], "")
    bad["metadata"]["created_at"] = float("nan")
    records = [
        record([MAPPED], "kept", seconds=1),
        record([MAPPED], "kept", seconds=2),  # the same text for the same sender: a duplicate
        record([SECOND], "kept", seconds=3),  # the same text, another sender: its own memory
        record([MAPPED], "old news", seconds=4, deleted=True),
        record([MAPPED], "   "),
        bad,
    ]
    export.write("luna", records)
    report = import_all(export, server)
    account = report.per_personality["luna"]
    assert (account.records, account.imported, account.duplicates, account.deleted, account.rejected) == (
        6,
        2,
        1,
        1,
        2,
    )
    assert account.unaccounted == 0 and report.memories_written == 2
    rejects = rows(export.conn, "tinybot_migration.shapes_rejects", "record_index")
    assert [(r[0], r[1], r[3], r[4]) for r in rejects] == [
        ("luna/luna_memories.json", 4, "luna", "result holds only whitespace"),
        ("luna/luna_memories.json", 5, "luna", "result is empty"),
    ]
    assert rejects[0][5]["result"] == "   " and rejects[1][5]["metadata"]["created_at"] == "nan"
    assert every_record_accounted_for(export.conn, report).passed


def test_a_re_run_makes_no_request_and_leaves_every_row_as_it_was(export, server):
    export.write("luna", [record([MAPPED, UNLISTED], "one"), record([SECOND], "two"), record([MAPPED], "")])
    import_all(export, server)
    before = {
        t: rows(export.conn, t)
        for t in ("memories", "shapes_persona_mappings", "tinybot_migration.embedding_cache")
    }
    before["tinybot_migration.shapes_rejects"] = rows(
        export.conn, "tinybot_migration.shapes_rejects", "record_index"
    )
    sent = len(server.requests)
    again = import_all(export, server)
    assert len(server.requests) == sent and again.requests == 0 and again.memories_written == 0
    assert again.already_present == 3 and again.links.mappings_written == 0
    after = {
        t: rows(export.conn, t)
        for t in ("memories", "shapes_persona_mappings", "tinybot_migration.embedding_cache")
    }
    after["tinybot_migration.shapes_rejects"] = rows(
        export.conn, "tinybot_migration.shapes_rejects", "record_index"
    )
    assert after == before


def test_a_sender_mapped_later_is_linked_in_place_without_a_request(export, server):
    export.write("luna", [record([UNLISTED], "first"), record([UNLISTED, MAPPED], "second", seconds=9)])
    import_all(export, server)
    ids = {m["id"] for m in memories(export.conn)}
    sent = len(server.requests)

    persona = export.person("1005", name="Late")
    export.map(UNLISTED, "1005")
    foreseen = estimate_all(export, server)  # the estimate counts the re-pointing and does none of it
    assert foreseen.memories_to_relink == 2 and foreseen.links.memories_linked == 0
    unlisted = [m for m in memories(export.conn) if str(m["legacy_shapes_user_id"]) == UNLISTED]
    assert [m["persona_id"] for m in unlisted] == [None, None]
    relinked = import_all(export, server)
    assert len(server.requests) == sent and relinked.memories_written == 0
    assert relinked.links.memories_linked == 2 and relinked.links.mappings_written == 1
    assert {m["id"] for m in memories(export.conn)} == ids
    assert {
        m["persona_id"] for m in memories(export.conn) if str(m["legacy_shapes_user_id"]) == UNLISTED
    } == {persona}
    assert relinked.unmapped == {}

    moved = export.person("1006", name="Moved")
    export.map(UNLISTED, "1006")  # the mapping changed to another user
    repointed = import_all(export, server)
    assert repointed.links.memories_repointed == 2 and len(server.requests) == sent
    assert repointed.links.repointed_senders == [f"{UNLISTED}: persona {persona} -> {moved}"]
    [row] = [r for r in rows(export.conn, "shapes_persona_mappings") if str(r[1]) == UNLISTED]
    assert row[2] == moved


def test_a_fixed_record_leaves_the_rejects_table_on_the_next_run(export, server):
    path = export.write("luna", [record([MAPPED], "fine"), record([MAPPED], "")])
    import_all(export, server)
    assert len(rows(export.conn, "tinybot_migration.shapes_rejects")) == 1
    fixed = json.loads(path.read_text())
    fixed[1]["result"] = "now it has a text"
    path.write_text(json.dumps(fixed))
    report = import_all(export, server)
    assert (
        rows(export.conn, "tinybot_migration.shapes_rejects") == []
        and report.per_personality["luna"].imported == 2
    )


def test_a_text_over_the_input_limit_is_embedded_truncated_and_kept_whole(export, server):
    long = "long memory " + "x" * (MAX_TOKENS_PER_INPUT * 3)
    export.write("luna", [record([MAPPED], long)])
    report = import_all(export, server)
    assert report.texts_truncated == 1
    assert server.requests[0] == [truncate_for_embedding(long)[0]]
    assert memories(export.conn)[0]["content"] == long


def test_a_text_the_provider_refuses_makes_its_records_rejected_and_the_rest_imported(export, server):
    server.reject_marker = "FORBIDDEN"
    export.write("luna", [record([MAPPED], "FORBIDDEN words"), record([SECOND], "fine", seconds=3)])
    report = import_all(export, server)
    account = report.per_personality["luna"]
    assert (account.imported, account.rejected, account.unaccounted) == (1, 1, 0)
    [reject] = rows(export.conn, "tinybot_migration.shapes_rejects")
    assert reject[1] == 0 and reject[4].startswith("the embedding provider refused the text")
    assert reject[5]["result"] == "FORBIDDEN words"  # the raw record, read back from the file
    assert every_record_accounted_for(export.conn, report).passed


def test_the_accounting_check_fails_when_a_memory_or_a_reject_row_vanishes(export, server):
    export.write("luna", [record([MAPPED], "kept"), record([MAPPED], "")])
    report = import_all(export, server)
    assert every_record_accounted_for(export.conn, report).passed
    export.conn.execute("DELETE FROM memories")
    export.conn.execute("DELETE FROM tinybot_migration.shapes_rejects")
    outcome = every_record_accounted_for(export.conn, report)
    assert not outcome.passed
    assert (
        "1 records have memories missing from the new DB, e.g. luna/luna_memories.json[0]"
        in outcome.description
    )
    assert (
        "1 rejected records have no row in shapes_rejects, e.g. luna/luna_memories.json[1]"
        in outcome.description
    )


def test_an_unreadable_file_is_one_reject_and_fixing_it_imports_its_records(export, server):
    """A truncated file is the export's defect: one reject for the whole file (size, digest, first
    characters), accounted for, never a failure of what the import itself did; the others import."""
    export.write("luna", [record([MAPPED], "fine")])
    export.personality("nova")
    export.write_text("nova", '[{"id": "x"},')
    report = import_all(export, server, slugs=("luna", "nova"))
    assert report.per_personality["luna"].imported == 1 and report.memories_written == 1
    outcome = every_record_accounted_for(export.conn, report)
    assert outcome.passed, outcome.description
    assert "1 unreadable file(s), each one reject in shapes_rejects: nova/nova_memories.json: not JSON" in (
        outcome.description
    )
    assert "line 1, column 14" in outcome.description and outcome.metadata["unreadable_files"] == 1
    [reject] = rows(export.conn, "tinybot_migration.shapes_rejects")
    assert reject[:4] == ("nova/nova_memories.json", -1, None, "nova") and "not JSON" in reject[4]
    assert (
        reject[5]["file_size"] == 13
        and len(reject[5]["sha256"]) == 64
        and reject[5]["head"] == '[{"id": "x"},'
    )

    export.write("nova", [record([MAPPED], "now readable")])
    fixed = import_all(export, server, slugs=("luna", "nova"))
    assert fixed.per_personality["nova"].imported == 1 and fixed.memories_written == 1
    assert rows(export.conn, "tinybot_migration.shapes_rejects") == []
    assert every_record_accounted_for(export.conn, fixed).passed


def test_a_malformed_mapping_file_stops_the_import_before_anything_is_written(export, server):
    export.write("luna", [record([MAPPED], "fine")])
    (export.folder / "uuid-mappings.json").write_text('{"mappings": {"x": 1}}')
    with pytest.raises(ShapesExportError, match="uuid-mappings.json is malformed: the key 'x' is not a UUID"):
        import_all(export, server)
    assert rows(export.conn, "memories") == [] and rows(export.conn, "shapes_persona_mappings") == []
    assert server.requests == []


def test_an_estimate_writes_nothing_calls_nothing_and_is_what_the_run_then_spends(export, server):
    export.write(
        "luna", [record([MAPPED, UNLISTED], "one"), record([SECOND], "two"), record([SECOND], "one")]
    )
    dry = estimate_all(export, server)
    assert server.requests == []
    for table in (
        "memories",
        "shapes_persona_mappings",
        "tinybot_migration.shapes_rejects",
        "tinybot_migration.embedding_cache",
    ):
        assert rows(export.conn, table) == [], table
    assert (dry.estimate.texts, dry.pending) == (2, 4)
    real = import_all(export, server)
    assert real.provider_inputs == dry.estimate.texts and real.tokens == dry.estimate.tokens
    assert estimate_all(export, server).estimate.texts == 0


def test_a_file_with_a_byte_order_mark_is_read_whole_even_for_a_refused_record(export, server):
    server.reject_marker = "FORBIDDEN"
    path = export.write("luna", [record([MAPPED], "FORBIDDEN words"), record([SECOND], "fine", seconds=3)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = import_all(export, server)
    assert report.per_personality["luna"].file_error is None and report.per_personality["luna"].imported == 1
    [reject] = rows(export.conn, "tinybot_migration.shapes_rejects")
    assert reject[5]["result"] == "FORBIDDEN words"  # read back from the file, BOM and all


def test_personalities_are_imported_in_batches_of_files_with_one_account(export, server, monkeypatch):
    """An import holds one batch of files at a time (whole files, about FILE_BYTES_PER_BATCH bytes);
    the report counts across batches as one pass would: senders once, every record accounted."""
    from tinybot_migration.lib.shapes import importer

    monkeypatch.setattr(importer, "FILE_BYTES_PER_BATCH", 1)  # every file is a batch of its own
    export.write("luna", [record([MAPPED, UNLISTED], "one"), record([SECOND], "two"), record([MAPPED], "")])
    export.write("nova", [record([MAPPED], "one", seconds=4), record([UNLISTED], "three", seconds=5)])
    parsed: list[str] = []
    parse = importer.parse_memories_file

    def parse_and_note(export_dir, slug, now=None):
        parsed.append(slug)
        return parse(export_dir, slug, now)

    monkeypatch.setattr(importer, "parse_memories_file", parse_and_note)
    lines: list = []
    dry = estimate_all(export, server, slugs=("luna", "nova"))
    assert dry.estimate.texts == 3 and server.requests == []  # "one" twice is one text to embed
    report = import_all(export, server, slugs=("luna", "nova"), log=lines.append)
    assert parsed == ["luna", "nova", "luna", "nova"]
    assert any(str(line).startswith("shapes (batch 2 of 2)") for line in lines), lines
    assert report.senders == 3 and report.memories_written == 5 and report.pending == 5
    assert report.provider_inputs == 3 and report.links.mappings_written == 2
    assert [(a.records, a.imported, a.rejected) for a in report.per_personality.values()] == [
        (3, 2, 1),
        (2, 2, 0),
    ]
    assert len(rows(export.conn, "tinybot_migration.shapes_rejects", "record_index")) == 1
    assert every_record_accounted_for(export.conn, report).passed
