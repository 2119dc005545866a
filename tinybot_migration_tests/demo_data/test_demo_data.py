"""The demo-data generator on the real embedded PostgreSQL server, at scale 1."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tinybot_migration.lib.demo_data import (
    OLD_TABLES,
    generate_demo_data,
    old_database_has_data,
    shapes_export,
)
from tinybot_migration.lib.demo_data import generator as demo_generator
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.new_database_schema import apply_old_schema

SCALE_ONE_COUNTS = {
    "users": 14,
    "personas": 67,
    "user_default_personas": 12,
    "system_prompts": 3,
    "llm_configs": 7,
    "personalities": 67,
    "personality_default_configs": 60,
    "personality_owners": 72,
    "user_personality_configs": 30,
    "activated_channels": 20,
    "conversation_history": 4_364,
    "pending_memories": 7,
}
_names = itertools.count(1)


def table_checksums(url: str) -> dict[str, str]:
    """count and md5 of every row (ids included) of every old table."""
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
                f" FROM {table} t"
            ).fetchone()[0]
            for table in OLD_TABLES
        }


def export_files(export_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(export_dir)): p.read_bytes() for p in sorted(export_dir.rglob("*")) if p.is_file()
    }


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(pg_server, tinybot_home, tmp_path_factory):
    """Scale 1, seed 42, generated once for the read-only tests of this module."""
    url = embedded_database_url(f"demo_shared_{next(_names)}", tinybot_home)
    export_dir = tmp_path_factory.mktemp("demo") / "shapes"
    summary = generate_demo_data(url, export_dir, scale=1, seed=42)
    return url, export_dir, summary


def query(url: str, statement: str):
    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchall()


def scalar(url: str, statement: str):
    return query(url, statement)[0][0]


# --- shape ----------------------------------------------------------------------------------


def test_scale_one_counts_are_exact(demo):
    url, export_dir, summary = demo
    assert summary.scale == 1 and summary.seed == 42
    assert summary.table_counts == SCALE_ONE_COUNTS
    for table, count in SCALE_ONE_COUNTS.items():
        assert scalar(url, f"SELECT count(*) FROM {table}") == count, table
    contexts = "SELECT count(DISTINCT (channel_id, personality_id, persona_id)) FROM conversation_history"
    assert summary.contexts == scalar(url, contexts) == 79
    assert scalar(url, "SELECT count(*) FROM system_prompts WHERE is_default") == 1
    assert scalar(url, "SELECT count(*) FROM llm_configs WHERE owner_id IS NULL AND is_global") >= 2
    assert scalar(url, "SELECT count(*) FROM llm_configs WHERE owner_id IS NOT NULL") >= 2
    assert scalar(url, "SELECT count(*) FROM activated_channels WHERE created_by IS NULL") >= 1
    assert (
        scalar(
            url, "SELECT count(DISTINCT role) FROM conversation_history WHERE role <> ALL('{user,assistant}')"
        )
        == 0
    )
    assert summary.seconds > 0

    folders = sorted(p for p in export_dir.iterdir() if p.is_dir())
    assert summary.shapes_folders == len(folders) == 66
    slugs = {row[0] for row in query(url, "SELECT slug FROM personalities")}
    assert {p.name for p in folders} < slugs  # one personality has no folder
    records = [r for p in folders for r in json.loads((p / f"{p.name}_memories.json").read_text("utf-8"))]
    assert summary.shapes_memories == len(records) == 9_364
    assert summary.shapes_deleted == sum(r["deleted"] for r in records)
    assert 0.02 * len(records) < summary.shapes_deleted < 0.04 * len(records)
    groups = [r for r in records if r["metadata"]["group"]]
    assert summary.shapes_group_memories == len(groups)
    assert 0.04 * len(records) < len(groups) < 0.06 * len(records)
    assert all(2 <= len(r["senders"]) <= 4 for r in groups)


def test_identifiers_and_timestamps_are_well_formed(demo):
    url, _, _ = demo
    lengths = {row[0] for row in query(url, "SELECT DISTINCT length(discord_id) FROM users")}
    assert lengths <= {17, 18, 19} and all(
        scalar(url, f"SELECT bool_and({col} ~ '^[0-9]{{17,19}}$') FROM {table}")
        for table, col in [("users", "discord_id"), ("conversation_history", "channel_id")]
    )
    assert scalar(url, "SELECT count(*) = count(DISTINCT slug) FROM personalities")
    assert scalar(url, "SELECT bool_and(slug ~ '^[a-z0-9-]+$') FROM personalities")
    # millisecond precision, fixed base date (never now()), updated_at after created_at
    assert (
        scalar(
            url,
            "SELECT count(*) FROM conversation_history WHERE date_trunc('milliseconds', created_at) <> created_at",
        )
        == 0
    )
    assert scalar(
        url,
        "SELECT min(created_at) >= '2025-01-01' AND max(created_at) < '2026-01-01' FROM conversation_history",
    )
    for table in ("users", "personas", "personalities", "llm_configs", "system_prompts"):
        assert scalar(url, f"SELECT count(*) FROM {table} WHERE updated_at < created_at") == 0
    assert scalar(url, "SELECT count(*) FILTER (WHERE avatar_data IS NULL) > 0 FROM personalities")


def test_real_data_quirks_are_present(demo):
    url, _, _ = demo
    # two personas of one owner with the same name (persona id-seed collision)
    assert (
        scalar(
            url, "SELECT count(*) FROM (SELECT 1 FROM personas GROUP BY owner_id, name HAVING count(*) > 1) t"
        )
        == 1
    )
    # fully identical messages with different old ids: a pair and a triple
    identical = query(
        url,
        "SELECT count(*), count(DISTINCT id) FROM conversation_history"
        " GROUP BY channel_id, personality_id, persona_id, created_at, role, content HAVING count(*) > 1"
        " ORDER BY 1",
    )
    assert identical == [(2, 2), (3, 3)]
    # user/assistant ties on created_at
    ties = (
        "SELECT count(*) FROM (SELECT 1 FROM conversation_history"
        " GROUP BY channel_id, personality_id, persona_id, created_at HAVING count(DISTINCT role) = 2) t"
    )
    assert scalar(url, ties) >= 2
    # DMs
    assert (
        scalar(url, "SELECT count(DISTINCT channel_id) FROM conversation_history WHERE guild_id IS NULL") >= 2
    )
    # bytea with 0x00, nested JSON, unicode JSON, JSON null beside SQL NULL
    assert (
        scalar(url, r"SELECT count(*) FROM personalities WHERE position('\x00'::bytea IN avatar_data) > 0")
        >= 1
    )
    nested = """custom_fields = '{"a": {"b": [1, 2, {"c": null}]}}'::jsonb"""
    assert scalar(url, f"SELECT count(*) FROM personalities WHERE {nested}") >= 1
    assert scalar(url, "SELECT count(*) FROM personalities WHERE custom_fields::text LIKE '%京都%'") >= 1
    assert scalar(url, "SELECT count(*) FROM personalities WHERE custom_fields IS NULL") >= 1
    assert scalar(url, "SELECT count(*) FROM personalities WHERE voice_settings = 'null'::jsonb") >= 1
    assert scalar(url, "SELECT count(*) FROM personas WHERE pronouns IS NULL") >= 1
    assert scalar(url, "SELECT count(*) FROM personalities WHERE personality_age = ''") >= 1
    assert scalar(url, "SELECT count(*) FROM llm_configs WHERE temperature = 0.70") >= 1
    assert scalar(url, "SELECT count(*) FROM llm_configs WHERE repetition_penalty = 1.05") >= 1
    assert scalar(url, "SELECT count(*) FROM llm_configs WHERE temperature IS NULL") >= 1
    # contents: unicode, ZWJ emoji, RTL, newlines, quotes, backslashes
    for needle in ("👩\u200d💻", "東京", "مرحبا", "\n", '"', "\\", "é"):
        assert scalar(
            url,
            f"SELECT count(*) FROM conversation_history WHERE strpos(content, {quote_literal(needle)}) > 0",
        )


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def test_conversation_structure(demo):
    url, _, _ = demo
    ordered = """
        SELECT role,
               lag(role) OVER w AS prev,
               lead(role) OVER w AS next,
               row_number() OVER w AS n
        FROM conversation_history
        WINDOW w AS (PARTITION BY channel_id, personality_id, persona_id
                     ORDER BY created_at, CASE role WHEN 'user' THEN 0 ELSE 1 END, id)
    """
    (answered, assistant_first, user_runs, trailing, double_assistant) = query(
        url,
        f"""SELECT count(*) FILTER (WHERE role = 'assistant' AND prev = 'user'),
                   count(*) FILTER (WHERE role = 'assistant' AND n = 1),
                   count(*) FILTER (WHERE role = 'user' AND prev = 'user'),
                   count(*) FILTER (WHERE role = 'user' AND next IS NULL),
                   count(*) FILTER (WHERE role = 'assistant' AND prev = 'assistant')
            FROM ({ordered}) o""",
    )[0]
    assert 2_100 <= answered <= 2_182  # about 2,200 answered exchanges
    assert assistant_first >= 2
    assert user_runs >= 10  # runs of 2-4 consecutive user messages
    assert trailing >= 3  # contexts ending in an unanswered user message
    assert double_assistant == 0
    # user runs: users after the k-th assistant message of a context form run k
    run_lengths = """
        SELECT run, count(*) FROM (
            SELECT count(*) AS run FROM (
                SELECT channel_id, personality_id, persona_id, role,
                       count(*) FILTER (WHERE role = 'assistant') OVER w AS exchange
                FROM conversation_history
                WINDOW w AS (PARTITION BY channel_id, personality_id, persona_id
                             ORDER BY created_at, CASE role WHEN 'user' THEN 0 ELSE 1 END, id)
            ) t WHERE role = 'user' GROUP BY channel_id, personality_id, persona_id, exchange
        ) r GROUP BY run"""
    runs = dict(query(url, run_lengths))
    assert {1, 2, 3} <= set(runs) <= {1, 2, 3, 4, 5}


def test_shapes_export_format_and_quirks(demo):
    url, export_dir, summary = demo
    users = dict(
        query(
            url,
            "SELECT u.discord_id, d.persona_id IS NOT NULL"
            " FROM users u LEFT JOIN user_default_personas d ON d.user_id = u.id",
        )
    )
    mapping_doc = json.loads((export_dir / "uuid-mappings.json").read_text("utf-8"))
    mappings = mapping_doc["mappings"]
    assert list(mappings) == sorted(mappings)
    assert all(set(m) == {"discordId", "note"} for m in mappings.values())

    records, per_file_text = [], {}
    for path in sorted(export_dir.glob("*/*_memories.json")):
        assert path.name == f"{path.parent.name}_memories.json"
        text = path.read_text("utf-8")
        file_records = json.loads(text)
        # ensure_ascii=False, indent=2, a final newline: exactly what json.dumps writes
        assert text == json.dumps(file_records, ensure_ascii=False, indent=2) + "\n"
        per_file_text[path.parent.name] = file_records
        records += [(path.parent.name, r) for r in file_records]

    keys = ["id", "shape_id", "senders", "result", "summary_type", "deleted", "metadata"]
    meta_keys = ["discord_channel_id", "discord_guild_id", "group", "senders", "msg_ids"]
    meta_keys += ["start_ts", "end_ts", "created_at"]
    for _, r in records:
        assert list(r) == keys and list(r["metadata"]) == meta_keys
        a, b = r["id"].split("/")
        assert a.isdigit() and b.isdigit()
        assert r["summary_type"] in ("automatic", "manual")
        assert r["senders"] == r["metadata"]["senders"]
        assert r["metadata"]["group"] == (len(r["senders"]) > 1)
        m = r["metadata"]
        assert isinstance(m["created_at"], float) and m["start_ts"] <= m["end_ts"] <= m["created_at"]
    assert len({r["id"] for _, r in records}) == len(records)
    assert len({r["shape_id"] for _, r in records}) == 66
    for slug, file_records in per_file_text.items():
        order = [(r["metadata"]["created_at"], r["id"]) for r in file_records]
        assert order == sorted(order), slug
    assert {r["summary_type"] for _, r in records} == {"automatic", "manual"}
    assert any(r["metadata"]["discord_guild_id"] == "" for _, r in records)
    assert any(r["metadata"]["discord_guild_id"] != "" for _, r in records)
    assert any("👩\u200d💻" in r["result"] or "日本語" in r["result"] for _, r in records)

    # senders: about a quarter unmapped (absent, or mapped to a discordId no user has)
    senders = {s for _, r in records for s in r["senders"]}
    mapped = {s for s in senders if s in mappings and mappings[s]["discordId"] in users}
    absent = {s for s in senders if s not in mappings}
    ghosts = {s for s in senders if s in mappings and mappings[s]["discordId"] not in users}
    assert summary.shapes_senders == len(senders) == 16
    assert summary.shapes_unmapped_senders == len(absent | ghosts) == 4
    assert absent and ghosts
    assert all(users[mappings[s]["discordId"]] for s in mapped)  # mapped users have a default persona

    # a couple of duplicates (same slug, sender and text) and empty / whitespace-only results
    live = [(slug, r) for slug, r in records if not r["deleted"] and r["result"].strip()]
    seen: dict[tuple, int] = {}
    for slug, r in live:
        for sender in r["senders"]:
            seen[(slug, sender, r["result"])] = seen.get((slug, sender, r["result"]), 0) + 1
    assert sum(n - 1 for n in seen.values()) == 2
    blank = [r["result"] for _, r in records if not r["result"].strip()]
    assert sorted(blank) == ["", "  \n\t "]


def test_constraints_and_indexes_survive_the_bulk_load(demo, make_database, admin_connect):
    """conversation_history's foreign keys and index are rebuilt after the COPY: same as before."""
    url, _, _ = demo
    schema_only = make_database("demo_schema")
    apply_old_schema(admin_connect(schema_only))

    def definitions(u: str):
        constraints = query(
            u,
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
            " WHERE conrelid = 'conversation_history'::regclass ORDER BY 1",
        )
        indexes = query(
            u,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'conversation_history' ORDER BY 1",
        )
        return constraints, indexes

    assert definitions(url) == definitions(schema_only)
    assert any("FOREIGN KEY (persona_id)" in c[1] for c in definitions(url)[0])


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_another_seed_differs(demo, make_database, tmp_path):
    url, export_dir, summary = demo
    # A second database written through a session in another time zone: same data.
    again_url = make_database("demo_again")
    tz_url = again_url + "&options=" + quote("-c TimeZone=America/New_York")
    again = generate_demo_data(tz_url, tmp_path / "again", scale=1, seed=42)
    assert table_checksums(again_url) == table_checksums(url)
    assert export_files(tmp_path / "again") == export_files(export_dir)
    assert {k: v for k, v in vars(again).items() if k != "seconds"} == {
        k: v for k, v in vars(summary).items() if k != "seconds"
    }

    other_url = make_database("demo_other")
    generate_demo_data(other_url, tmp_path / "other", scale=1, seed=7)
    ours, theirs = table_checksums(url), table_checksums(other_url)
    assert all(ours[t] != theirs[t] for t in OLD_TABLES)
    assert all(ours[t].split(":")[0] == theirs[t].split(":")[0] for t in OLD_TABLES)  # same counts
    assert digest(export_files(tmp_path / "other")) != digest(export_files(export_dir))


def test_worker_process_writes_the_same_export(demo, make_database, tmp_path, monkeypatch):
    """Larger scales export shapes in a worker process: its files equal the in-process ones."""
    url, export_dir, _ = demo
    monkeypatch.setattr(demo_generator, "_WORKER_MIN_SCALE", 1)
    worker_url = make_database("demo_worker")
    generate_demo_data(worker_url, tmp_path / "worker", scale=1, seed=42)
    assert export_files(tmp_path / "worker") == export_files(export_dir)
    assert table_checksums(worker_url) == table_checksums(url)


def shapes_jobs(blocks: int, seed: int = 42) -> list[shapes_export.ShapesJob]:
    """The jobs the generator submits for its first `blocks` blocks (no database needed)."""
    source = demo_generator._Source(seed)
    return [demo_generator._Block(source, index, seed).build()[2] for index in range(blocks)]


def export_with(staging: Path, jobs: list[shapes_export.ShapesJob], workers: int) -> list:
    staging.mkdir()
    exporter = shapes_export.ShapesExporter(staging, workers=workers)
    for job in jobs:
        exporter.submit(job)
    return sorted(exporter.finish(), key=lambda r: sorted(r.mappings))


def test_exporter_output_does_not_depend_on_the_workers(tmp_path):
    jobs = shapes_jobs(3)
    in_process = export_with(tmp_path / "in_process", jobs, workers=0)
    pooled = export_with(tmp_path / "pooled", jobs, workers=2)
    assert pooled == in_process
    assert sum(r.folders for r in pooled) == 3 * shapes_export.SHAPES_FOLDERS_PER_BLOCK
    assert export_files(tmp_path / "pooled") == export_files(tmp_path / "in_process")


def test_a_failing_worker_is_a_clear_error(tmp_path):
    job = shapes_jobs(1)[0]
    broken = shapes_export.ShapesJob(**{**vars(job), "personalities": []})  # nothing to export to
    exporter = shapes_export.ShapesExporter(tmp_path, workers=2)
    exporter.submit(broken)
    with pytest.raises(
        RuntimeError, match=r"shapes export worker failed on block 0: ValueError: empty range"
    ):
        exporter.finish()


def test_a_worker_that_dies_is_a_clear_error(tmp_path):
    others = set(multiprocessing.active_children())
    exporter = shapes_export.ShapesExporter(tmp_path, workers=1)
    for job in shapes_jobs(3):  # about a second of work: the worker dies with blocks pending
        exporter.submit(job)
    for worker in set(multiprocessing.active_children()) - others:
        worker.kill()
    with pytest.raises(
        RuntimeError, match=r"shapes export worker process exited abruptly with block \d pending"
    ):
        exporter.finish()


def test_dumps_records_equals_json_dumps():
    records = [
        {
            "id": "1/2",
            "shape_id": "s",
            "senders": ["a", "b"],
            "result": 'quote " backslash \\ tab \t nl \n 👩\u200d💻 \u202e',
            "summary_type": "manual",
            "deleted": True,
            "metadata": {
                "discord_channel_id": "1",
                "discord_guild_id": "",
                "group": True,
                "senders": [],
                "msg_ids": ["1"],
                "start_ts": 1.0,
                "end_ts": 1712345678.123,
                "created_at": 1e-7,
            },
        },
        {"id": "unexpected shape", "extra": [1, {"x": None}]},  # falls back to json.dumps
    ]
    assert shapes_export.dumps_records(records) == json.dumps(records, ensure_ascii=False, indent=2)
    assert shapes_export.dumps_records([]) == json.dumps([], indent=2)


# --- refusals, replace, atomicity -------------------------------------------------------------


def test_refuses_non_empty_database_then_replace_regenerates(make_database, tmp_path, pg_server):
    url = make_database("demo_refuse")
    export_dir = tmp_path / "shapes"
    assert old_database_has_data(url) is False  # no tables yet
    first = generate_demo_data(url, export_dir, scale=1, seed=3)
    assert old_database_has_data(url) is True
    checksums, files = table_checksums(url), export_files(export_dir)

    # The URL carries a password (the local server trusts the socket): it must not leak.
    secret_url = url.replace("postgres:@", "postgres:hunter2-secret@")
    with pytest.raises(ValueError) as refused:
        generate_demo_data(secret_url, tmp_path / "elsewhere", scale=1, seed=3)
    message = str(refused.value)
    assert "hunter2" not in message and "***" in message
    assert url.rsplit("/", 1)[1].split("?")[0] in message  # names the database
    assert "replace" in message
    assert not (tmp_path / "elsewhere").exists()

    (export_dir / "stale-slug").mkdir()
    (export_dir / "stale-slug" / "stale-slug_memories.json").write_text("[]")
    second = generate_demo_data(url, export_dir, scale=1, seed=3, replace=True)  # over existing rows
    assert table_checksums(url) == checksums
    assert export_files(export_dir) == files  # the stale folder is gone, the rest is identical
    assert second.table_counts == first.table_counts == SCALE_ONE_COUNTS
    assert second.shapes_memories == 9_364
    assert not list(tmp_path.glob(".*staging*"))


def test_refuses_a_non_empty_export_folder(make_database, tmp_path):
    url = make_database("demo_export_busy")
    export_dir = tmp_path / "shapes"
    (export_dir / "luna-1").mkdir(parents=True)
    (export_dir / "luna-1" / "luna-1_memories.json").write_text("[]")
    with pytest.raises(ValueError, match="not empty.*replace=True"):
        generate_demo_data(url, export_dir)
    assert old_database_has_data(url) is False
    assert (export_dir / "luna-1" / "luna-1_memories.json").read_text() == "[]"


def test_replace_never_deletes_a_folder_that_is_not_an_export(make_database, tmp_path):
    url = make_database("demo_folder")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(ValueError, match="refusing to delete"):
        generate_demo_data(url, precious, replace=True)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    assert old_database_has_data(url) is False


def test_refuses_the_new_database(make_database, tmp_path, admin_connect):
    url = make_database("demo_newdb")
    admin_connect(url).execute("CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY)")
    with pytest.raises(ValueError, match="looks like the new database"):
        generate_demo_data(url, tmp_path / "shapes", replace=True)


@pytest.mark.parametrize("scale", [0, -1, 1.5, "2", True, None])
def test_bad_scale_is_rejected(scale, tmp_path):
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        generate_demo_data("postgresql://nobody@invalid.invalid/none", tmp_path / "x", scale=scale)
    assert not (tmp_path / "x").exists()


def test_failure_leaves_database_and_export_untouched(make_database, tmp_path, monkeypatch, admin_connect):
    url = make_database("demo_atomic")
    apply_old_schema(admin_connect(url))
    real_copy = demo_generator._copy

    def failing_copy(conn, table, rows):
        if table == "conversation_history":
            raise RuntimeError("disk full (simulated)")
        real_copy(conn, table, rows)

    monkeypatch.setattr(demo_generator, "_copy", failing_copy)
    with pytest.raises(RuntimeError, match="simulated"):
        generate_demo_data(url, tmp_path / "shapes", scale=1)
    assert old_database_has_data(url) is False
    assert all(scalar(url, f"SELECT count(*) FROM {t}") == 0 for t in OLD_TABLES)
    assert not (tmp_path / "shapes").exists()
    assert not list(tmp_path.glob(".*staging*"))
