"""The relational migration end to end on the embedded server, with demo data at scale 1."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest
from dagster import AssetKey, instance_for_test, materialize

from tinybot_migration.defs.relational.assets import relational_assets
from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
from tinybot_migration.lib import ids
from tinybot_migration.lib.demo_data import generate_demo_data
from tinybot_migration.lib.relational import checks
from tinybot_migration.lib.relational.checks import row_count_parity
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES, TABLES_BY_NAME

DEMO_MESSAGES = 4_364


def full_row_checksums(url: str) -> dict[str, str]:
    """md5 of every row of every table, ids included, with timestamps as epoch microseconds."""
    sums = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for spec in RELATIONAL_TABLES:
            sums[spec.name] = conn.execute(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
                f" FROM {spec.name} t"
            ).fetchone()[0]
    return sums


def migrate(old_url: str, new_url: str, **kwargs):
    with instance_for_test() as instance:
        return materialize(
            relational_assets,
            resources={
                "old_database": OldDatabaseResource(url=old_url),
                "new_database": NewDatabaseResource(url=new_url),
            },
            instance=instance,
            raise_on_error=False,
            **kwargs,
        )


def metadata_of(result, table: str) -> dict:
    [materialization] = result.asset_materializations_for_node(table)
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


@pytest.fixture(scope="module")
def old_db(tmp_path_factory, pg_server, tinybot_home):
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    url = embedded_database_url("relational_old", tinybot_home)
    generate_demo_data(url, tmp_path_factory.mktemp("export"), scale=1, seed=42)
    return url


@pytest.fixture(scope="module")
def migrated(old_db, tinybot_home):
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    new_url = embedded_database_url("relational_new", tinybot_home)
    result = migrate(old_db, new_url)
    return new_url, result


def test_full_migration_passes_every_check(migrated):
    new_url, result = migrated
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    expected_checks = sum(len(checks.checks_for(spec)) for spec in RELATIONAL_TABLES)
    pending = [e for e in evaluations if e.check_name == "every_pending_memory_accounted_for"]
    assert len(evaluations) == expected_checks + len(pending) and len(pending) == 1
    failed = [(e.asset_key, e.check_name, e.description) for e in evaluations if not e.passed]
    assert failed == []
    history = metadata_of(result, "conversation_history")
    assert history["dagster/row_count"] == DEMO_MESSAGES
    assert history["rows_inserted"] == DEMO_MESSAGES
    assert history["id_collisions_resolved"] >= 1  # the identical messages in the demo data
    assert metadata_of(result, "personas")["id_collisions_resolved"] >= 1  # two personas, one name


def test_every_user_id_is_its_seed(migrated):
    new_url, _ = migrated
    with psycopg.connect(new_url) as conn:
        rows = conn.execute("SELECT id, discord_id FROM users").fetchall()
    assert rows
    assert all(row_id == ids.deterministic_uuid(ids.user_seed(discord_id)) for row_id, discord_id in rows)


def test_rerun_changes_nothing(migrated, old_db):
    new_url, _ = migrated
    before = full_row_checksums(new_url)
    result = migrate(old_db, new_url)
    assert result.success
    assert full_row_checksums(new_url) == before
    for spec in RELATIONAL_TABLES:
        metadata = metadata_of(result, spec.name)
        assert metadata["rows_written"] == 0, spec.name
        assert metadata["rows_unchanged"] == metadata["rows_read"], spec.name


def test_values_survive_the_copy(migrated, old_db):
    new_url, _ = migrated
    with psycopg.connect(old_db) as old, psycopg.connect(new_url) as new:
        # bytea with a NUL byte, nested JSON and NULL JSON, by slug
        for column in (
            "avatar_data",
            "custom_fields",
            "voice_settings",
            "image_settings",
            "personality_tone",
        ):
            old_values = dict(old.execute(f"SELECT slug, {column}::text FROM personalities").fetchall())
            new_values = dict(new.execute(f"SELECT slug, {column}::text FROM personalities").fetchall())
            assert old_values == new_values, column
        assert any(v is None for v in old_values.values())
        avatars = [r[0] for r in new.execute("SELECT avatar_data FROM personalities").fetchall()]
        assert any(a is not None and b"\x00" in a for a in avatars)
        assert any(a is None for a in avatars)
        # numerics keep their scale, NULLs stay NULL
        old_numbers = sorted(
            old.execute("SELECT name, temperature, top_p FROM llm_configs").fetchall(), key=str
        )
        new_numbers = sorted(
            new.execute("SELECT name, temperature, top_p FROM llm_configs").fetchall(), key=str
        )
        assert old_numbers == new_numbers
        assert any(isinstance(t, Decimal) for _, t, _ in new_numbers)
        assert any(t is None or p is None for _, t, p in new_numbers)
        # emoji and every other character survive; timestamps keep their instant
        emoji = "SELECT content, extract(epoch FROM created_at) FROM conversation_history WHERE content ~ '[😀-🫿]'"
        old_emoji = sorted(old.execute(emoji).fetchall())
        assert old_emoji
        assert sorted(new.execute(emoji).fetchall()) == old_emoji


def test_old_database_resource_cannot_write(old_db):
    resource = OldDatabaseResource(url=old_db)
    for statement in (
        "INSERT INTO users VALUES (gen_random_uuid(), '1', 'x', now(), now())",
        "UPDATE users SET username = 'x'",
        "CREATE TABLE intruder (id int)",
    ):
        with resource.connect() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(statement)


def test_a_non_utc_session_gives_the_same_result(old_db, migrated, tinybot_home, admin_connect, monkeypatch):
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    new_url, _ = migrated
    other_url = embedded_database_url("relational_new_tz", tinybot_home)
    admin_connect(other_url).execute("ALTER DATABASE relational_new_tz SET TimeZone = 'Asia/Kolkata'")
    monkeypatch.setenv("PGTZ", "America/Los_Angeles")  # the client's session time zone
    result = migrate(old_db, other_url)
    assert result.success
    monkeypatch.delenv("PGTZ")
    assert full_row_checksums(other_url) == full_row_checksums(new_url)


# --- each check fails on corrupted data ---------------------------------------------------------


@pytest.fixture
def connections(migrated, old_db):
    """Old and new connections; the new one is rolled back after the test, undoing any corruption."""
    new_url, _ = migrated
    with psycopg.connect(old_db) as old, psycopg.connect(new_url) as new:
        yield old, new
        new.rollback()


def outcome(check, *args):
    result = check(*args)
    return result.passed, result.description


def test_row_count_parity_fails_on_an_extra_row(connections):
    old, new = connections
    spec = TABLES_BY_NAME["users"]
    assert checks.row_count_parity(old, new, spec).passed
    new.execute("INSERT INTO users VALUES (%s, '999', 'bot-made', now(), now())", (uuid.uuid4(),))
    passed, description = outcome(checks.row_count_parity, old, new, spec)
    assert not passed and "new rows" in description


def test_foreign_key_check_fails_on_a_lost_reference(connections):
    old, new = connections
    spec = TABLES_BY_NAME["user_personality_configs"]
    assert checks.foreign_keys_remapped(old, new, spec).passed
    new.execute(
        "UPDATE user_personality_configs SET persona_id = NULL"
        " WHERE id = (SELECT id FROM user_personality_configs WHERE persona_id IS NOT NULL LIMIT 1)"
    )
    passed, description = outcome(checks.foreign_keys_remapped, old, new, spec)
    assert not passed and "persona_id" in description


def test_foreign_key_check_fails_on_an_orphan(connections):
    old, new = connections
    spec = TABLES_BY_NAME["activated_channels"]
    new.execute("ALTER TABLE activated_channels DROP CONSTRAINT activated_channels_created_by_fkey")
    new.execute(
        "UPDATE activated_channels SET created_by = %s"
        " WHERE id = (SELECT id FROM activated_channels WHERE created_by IS NOT NULL LIMIT 1)",
        (uuid.uuid4(),),
    )
    passed, description = outcome(checks.foreign_keys_remapped, old, new, spec)
    assert not passed and "point at no row of users" in description


def test_ids_check_fails_when_an_id_does_not_follow_its_seed(connections):
    old, new = connections
    spec = TABLES_BY_NAME["conversation_history"]
    assert checks.ids_match_seeds(new, spec).passed
    new.execute(
        "UPDATE conversation_history SET content = content || ' (edited)'"
        " WHERE id = (SELECT id FROM conversation_history ORDER BY id LIMIT 1)"
    )
    passed, description = outcome(checks.ids_match_seeds, new, spec)
    assert not passed and "1 of" in description


def test_ids_check_accepts_collision_suffixes_but_not_a_suffix_the_group_does_not_justify(connections):
    old, new = connections
    spec = TABLES_BY_NAME["personas"]
    result = checks.ids_match_seeds(new, spec)
    assert result.passed and result.metadata["ids_with_collision_suffix"] >= 1
    owner, name = new.execute(
        "SELECT owner_id, name FROM personas GROUP BY owner_id, name HAVING count(*) = 2 LIMIT 1"
    ).fetchone()
    seed = ids.persona_seed(owner, name)
    insert = (
        "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
        " VALUES (%s, %s, 'x', %s, now(), now())"
    )
    # A third member of a group of two that skips :3, and a lone persona holding :2.
    new.execute(insert, (ids.deterministic_uuid(ids.with_collision_suffix(seed, 4)), name, owner))
    lone = "a name nobody else has"
    new.execute(
        insert,
        (ids.deterministic_uuid(ids.with_collision_suffix(ids.persona_seed(owner, lone), 2)), lone, owner),
    )
    result = checks.ids_match_seeds(new, spec)
    assert not result.passed and result.metadata["ids_not_matching_seed"] == 2


@pytest.mark.parametrize(
    "table, corruption",
    [
        (
            "personalities",
            "UPDATE personalities SET personality_tone = 'calm' WHERE slug = (SELECT min(slug) FROM personalities)",
        ),
        (
            "conversation_history",
            "UPDATE conversation_history SET created_at = created_at + interval '1 hour'"
            " WHERE id = (SELECT min(id::text)::uuid FROM conversation_history)",
        ),
        (
            "personalities",
            "UPDATE personalities SET avatar_data = avatar_data || '\\x00'::bytea WHERE avatar_data IS NOT NULL",
        ),
        ("llm_configs", "UPDATE llm_configs SET temperature = NULL WHERE temperature IS NOT NULL"),
    ],
)
def test_content_checksum_fails_on_changed_content(connections, table, corruption):
    old, new = connections
    spec = TABLES_BY_NAME[table]
    assert checks.content_checksum_matches(old, new, spec).passed
    new.execute(corruption)
    passed, description = outcome(checks.content_checksum_matches, old, new, spec)
    assert not passed and "differs" in description


def test_a_failing_blocking_check_stops_downstream_tables(old_db, tinybot_home, admin_connect):
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    new_url = embedded_database_url("relational_new_blocked", tinybot_home)
    NewDatabaseResource(url=new_url).ensure_schema()
    # A user the bot created in the new DB before the migration: parity for users must fail.
    admin_connect(new_url).execute(
        "INSERT INTO users VALUES (%s, '1', 'early bird', now(), now())", (uuid.uuid4(),)
    )
    result = migrate(old_db, new_url)
    assert not result.success
    failed = {(e.asset_key, e.check_name) for e in result.get_asset_check_evaluations() if not e.passed}
    assert (AssetKey("users"), "row_count_parity") in failed
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("users") in materialized
    assert AssetKey("personas") not in materialized


def test_lost_rows_are_restored_by_running_again(old_db, migrated, tinybot_home):
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    new_url, _ = migrated
    repaired_url = embedded_database_url("relational_new_repair", tinybot_home)
    assert migrate(old_db, repaired_url).success
    with psycopg.connect(repaired_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM conversation_history WHERE id IN (SELECT id FROM conversation_history LIMIT 10)"
        )
        conn.execute(
            "UPDATE personas SET content = 'tampered' WHERE id = (SELECT min(id::text)::uuid FROM personas)"
        )
    result = migrate(old_db, repaired_url)
    assert result.success
    assert metadata_of(result, "conversation_history")["rows_inserted"] == 10
    assert metadata_of(result, "personas")["rows_updated"] == 1
    assert full_row_checksums(repaired_url) == full_row_checksums(new_url)


def test_bulk_load_rebuilds_every_constraint_and_index(migrated):
    new_url, _ = migrated
    with psycopg.connect(new_url) as conn:
        constraints = {
            r[0]
            for r in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'conversation_history'::regclass"
            ).fetchall()
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'conversation_history'"
            ).fetchall()
        }
    assert {
        "conversation_history_pkey",
        "conversation_history_personality_id_fkey",
        "conversation_history_persona_id_fkey",
    } <= constraints
    assert {  # Prisma's names, as the bot's later migrations expect them
        "conversation_history_channel_id_personality_id_created_at_idx",
        "conversation_history_persona_id_idx",
        "conversation_history_discord_message_id_idx",
        "tinybot_migration_history_personality_time",
    } <= indexes


def test_personalities_register_their_slugs_as_memory_partitions(old_db, tinybot_home):
    from tinybot_migration.defs.partitions import personality_partitions
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    new_url = embedded_database_url("relational_new_partitions", tinybot_home)
    with instance_for_test() as instance:
        resources = {
            "old_database": OldDatabaseResource(url=old_db),
            "new_database": NewDatabaseResource(url=new_url),
        }
        selection = [a for a in relational_assets if a.key.path[-1] in ("system_prompts", "personalities")]
        assert materialize(selection, resources=resources, instance=instance).success
        slugs = instance.get_dynamic_partitions(personality_partitions.name)
        assert len(slugs) == 67 and len(set(slugs)) == 67
        assert materialize(selection, resources=resources, instance=instance).success
        assert instance.get_dynamic_partitions(personality_partitions.name) == slugs  # nothing added twice


def test_a_message_whose_persona_is_missing_is_rejected_and_reported(tinybot_home, tmp_path, admin_connect):
    """An old DB without the foreign key (real data has such rows): the row is not silently lost."""
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    old_url = embedded_database_url("relational_old_orphan", tinybot_home)
    generate_demo_data(old_url, tmp_path / "export", scale=1, seed=3)
    old_admin = admin_connect(old_url)
    old_admin.execute("ALTER TABLE conversation_history DROP CONSTRAINT conversation_history_persona_id_fkey")
    orphans = {
        str(row[0])
        for row in old_admin.execute(
            "UPDATE conversation_history SET persona_id = gen_random_uuid()"
            " WHERE id IN (SELECT id FROM conversation_history ORDER BY id LIMIT 25) RETURNING id"
        ).fetchall()
    }
    new_url = embedded_database_url("relational_new_orphan", tinybot_home)
    result = migrate(old_url, new_url)
    # The old DB's defect is accounted for and warned about; it never blocks what follows.
    assert result.success
    metadata = metadata_of(result, "conversation_history")
    assert metadata["rows_rejected_missing_parent"] == 25
    named = {orphan for orphan in orphans if orphan in metadata["rejected_examples"]}
    assert len(named) == 20 and "the first 20 of 25 named" in metadata["rejected_examples"]
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"row_count_parity"} and failed["row_count_parity"].severity.value == "WARN"
    description = failed["row_count_parity"].description
    assert "25 left out for a missing parent (tinybot_migration.relational_rejects)" in description
    assert "25 old row(s) left out for a missing parent (the first 20 of 25 named)" in description
    assert sum(orphan in description for orphan in orphans) == 20 and "is not in personas" in description
    rejects = (
        admin_connect(new_url)
        .execute(
            "SELECT row_key, reason, raw_row FROM tinybot_migration.relational_rejects WHERE table_name = 'conversation_history'"
        )
        .fetchall()
    )
    assert {key for key, _, _ in rejects} == orphans
    assert all("persona_id" in reason and raw["id"] == key for key, reason, raw in rejects)

    # A row the copy lost without a word (here: deleted behind its back) is an ERROR, and blocks.
    admin_connect(new_url).execute(
        "DELETE FROM conversation_history WHERE id IN (SELECT id FROM conversation_history LIMIT 1)"
    )
    with psycopg.connect(old_url) as old_conn, psycopg.connect(new_url) as new_conn:
        lost = row_count_parity(old_conn, new_conn, TABLES_BY_NAME["conversation_history"])
    assert not lost.passed and lost.severity == "ERROR"

    # The parents appear in the old DB (fixed at the source): the next run copies the rows and clears them.
    old_admin.execute(
        "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
        " SELECT c.persona_id, 'restored', 'restored', (SELECT min(id::text)::uuid FROM users), now(), now()"
        " FROM conversation_history c WHERE c.id = ANY(%s)",
        ([uuid.UUID(o) for o in orphans],),
    )
    again = migrate(old_url, new_url)
    assert again.success and all(e.passed for e in again.get_asset_check_evaluations())
    assert admin_connect(new_url).execute(
        "SELECT count(*) FROM tinybot_migration.relational_rejects"
    ).fetchone() == (0,)


def test_seeds_with_characters_copy_escapes_give_the_ids_of_their_real_text(
    tinybot_home, tmp_path, admin_connect
):
    """Seeds travel as COPY text, which escapes backslash, tab, newline and carriage return: the id
    is uuid5 of the seed's real characters, and the id check recomputes the same."""
    from tinybot_migration.lib.embedded_postgres import embedded_database_url

    old_url = embedded_database_url("relational_old_escapes", tinybot_home)
    generate_demo_data(old_url, tmp_path / "export", scale=1, seed=5)
    odd = {"personas": "tab\there\\back\nslash\rend", "system_prompts": "C:\\prompts\\v2 \\N"}
    old_admin = admin_connect(old_url)
    for table, name in odd.items():
        old_admin.execute(
            psycopg.sql.SQL(
                "UPDATE {} SET name = %s WHERE id = (SELECT id FROM {} ORDER BY id LIMIT 1)"
            ).format(psycopg.sql.Identifier(table), psycopg.sql.Identifier(table)),
            (name,),
        )
    new_url = embedded_database_url("relational_new_escapes", tinybot_home)
    result = migrate(old_url, new_url)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    with psycopg.connect(new_url) as new:
        persona_id, owner_id = new.execute(
            "SELECT id, owner_id FROM personas WHERE name = %s", (odd["personas"],)
        ).fetchone()
        [prompt_id] = new.execute(
            "SELECT id FROM system_prompts WHERE name = %s", (odd["system_prompts"],)
        ).fetchone()
    assert persona_id == ids.deterministic_uuid(ids.persona_seed(owner_id, odd["personas"]))
    assert prompt_id == ids.deterministic_uuid(ids.system_prompt_seed(odd["system_prompts"]))
    with psycopg.connect(new_url) as new:
        outcome = checks.ids_match_seeds(new, TABLES_BY_NAME["personas"])
    assert outcome.passed and outcome.metadata["rows_checked"] > 1
