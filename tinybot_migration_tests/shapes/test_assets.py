"""`shapes_export` and `shapes_memories` as Dagster runs them: a range run over the personality
partitions with every check, the WARN checks of the survey, the `memory_bill` job that only observes, and
the cases where there is nothing to import or the export cannot be read."""

import json

import pytest
from dagster import instance_for_test, materialize

from tinybot_migration.defs.memory_bill import memory_bill
from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.resources import (
    NewDatabaseResource,
    OldDatabaseResource,
    ShapesExportResource,
)
from tinybot_migration.defs.shapes.assets import shapes_export, shapes_memories
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, provider_for
from tinybot_migration_tests.helpers.shapes_exports import SENDERS, ShapesExport, record


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def export(new_db, tmp_path) -> ShapesExport:
    shapes = ShapesExport(tmp_path / "export", new_db)
    shapes.person("1001")
    shapes.map(SENDERS[0], "1001")
    shapes.write("luna", [record([SENDERS[0], SENDERS[1]], "group"), record([SENDERS[0]], "", seconds=1)])
    shapes.write("nova", [record([SENDERS[0]], "nova's", seconds=2, record_id="nova-1")])
    return shapes


def url_of(conn) -> str:
    return conn.info.dsn


def resources(export: ShapesExport, server, folder: ShapesExportResource) -> dict:
    url = url_of(export.conn)
    return {
        "new_database": NewDatabaseResource(url=url),
        "old_database": OldDatabaseResource(url=url),
        "embedding_provider": provider_for(server),
        "shapes_export_folder": folder,
    }


def run(instance, export: ShapesExport, server, path=None, **kwargs):
    """A range run over every registered partition, as `tinybot-migration run` starts it."""
    keys = instance.get_dynamic_partitions(personality_partitions.name)
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    return materialize(
        [shapes_export, shapes_memories],
        instance=instance,
        resources=resources(export, server, ShapesExportResource(path=str(path or export.folder))),
        tags=tags,
        raise_on_error=False,
        **kwargs,
    )


def checks(result) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}


def metadata(result, node: str) -> dict:
    # A range run records the same materialization for every partition (docs/design.md §8).
    materialization = result.asset_materializations_for_node(node)[-1]
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def test_a_range_run_imports_every_partition_with_every_check(instance, export):
    instance.add_dynamic_partitions(personality_partitions.name, ["nova", "luna"])
    with OpenAITestServer() as server:
        result = run(instance, export, server)
    assert result.success
    assert checks(result) == {
        "every_folder_maps_to_a_personality": (True, "WARN"),
        "every_file_parses": (True, "WARN"),
        "record_ids_unique_across_folders": (True, "WARN"),
        "every_record_accounted_for": (True, "ERROR"),
        "senders_mapped_to_personas": (False, "WARN"),
        "embeddings_present_with_right_dimensions": (True, "ERROR"),
        "no_duplicate_memories": (True, "ERROR"),
    }
    figures = metadata(result, "shapes_memories")
    assert figures["dagster/row_count"] == 3 and figures["memories_written"] == 3
    assert (figures["records"], figures["records_imported"], figures["records_rejected"]) == (3, 2, 1)
    assert figures["unmapped_senders"] == 1 and figures["provider_inputs"] == 2
    assert figures["mapping_file"] == "1 mappings"
    survey = metadata(result, "shapes_export")
    assert (survey["folders"], survey["records"], survey["senders"]) == (2, 3, 2)


def test_unknown_folders_and_unreadable_files_are_warned_about_and_never_block(instance, export):
    export.write_text("stranger", "[]")  # no personality has this slug
    export.personality("broken")
    export.write_text("broken", '{"not": "an array"}')
    instance.add_dynamic_partitions(personality_partitions.name, ["luna", "nova", "broken"])
    with OpenAITestServer() as server:
        result = run(instance, export, server)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    folders, files = evaluations["every_folder_maps_to_a_personality"], evaluations["every_file_parses"]
    assert not folders.passed and folders.severity.value == "WARN" and "stranger" in folders.description
    assert not files.passed and files.severity.value == "WARN"
    assert "broken/broken_memories.json: the top level is an object" in files.description
    # The unreadable file is accounted for as one reject: the blocking check passes, the run goes on.
    accounting = evaluations["every_record_accounted_for"]
    assert accounting.passed and "1 unreadable file(s), each one reject in shapes_rejects: broken/" in (
        accounting.description
    )
    assert result.success
    assert metadata(result, "shapes_memories")["memories_written"] == 3


def test_a_record_id_in_two_folders_is_imported_into_both_and_named(instance, export):
    export.write("luna", [record([SENDERS[0]], "shared memory", record_id="rec-shared")])
    export.write(
        "nova",
        [
            record([SENDERS[0]], "shared memory", record_id="rec-shared"),
            record([SENDERS[0]], "own", record_id="nova-own"),
        ],
    )
    instance.add_dynamic_partitions(personality_partitions.name, ["luna", "nova"])
    with OpenAITestServer() as server:
        result = run(instance, export, server)
    assert result.success
    [shared] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "record_ids_unique_across_folders"
    ]
    assert not shared.passed and shared.severity.value == "WARN"
    assert "1 record id(s) are in more than one personality's file" in shared.description
    assert "rec-shared in luna, nova" in shared.description
    assert metadata(result, "shapes_memories")["memories_written"] == 3  # one per personality, and nova's own


def test_the_memory_bill_job_observes_each_memory_asset_and_writes_nothing(instance, export):
    """The UI's dry run: a job of its own, no mode of the memory assets. Its estimate is an
    observation of each memory asset; the export survey's findings are its own figures."""
    export.write_text("nobody", json.dumps([record([SENDERS[0]], "no personality has this folder")]))
    with OpenAITestServer() as server:
        result = memory_bill.execute_in_process(
            instance=instance,
            resources=resources(export, server, ShapesExportResource(path=str(export.folder))),
        )
        assert server.requests == []
    assert result.success and result.get_asset_materialization_events() == []
    observed = {
        e.asset_observation_data.asset_observation.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in e.asset_observation_data.asset_observation.metadata.items()
        }
        for e in result.get_asset_observation_events()
    }
    assert set(observed) == {"rebuilt_memories", "shapes_memories"}
    shapes = observed["shapes_memories"]
    assert shapes["dry_run"] is True and shapes["texts_to_embed"] == 2 and shapes["memories_to_write"] == 3
    [output] = [e for e in result.all_events if e.is_successful_output]
    totals = {k: getattr(v, "value", v) for k, v in output.event_specific_data.metadata.items()}
    assert totals["texts_to_embed"] == 2 and "every_folder_maps_to_a_personality" in totals["findings"]
    assert "nobody" in totals["findings"]
    assert export.conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    assert export.conn.execute("SELECT count(*) FROM shapes_persona_mappings").fetchone()[0] == 0


def test_nothing_to_import_is_reported_and_not_a_failure(instance, export, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYBOT_HOME", str(tmp_path / "empty_home"))
    instance.add_dynamic_partitions(personality_partitions.name, ["luna"])
    with OpenAITestServer() as server:
        result = materialize(
            [shapes_export, shapes_memories],
            instance=instance,
            resources=resources(export, server, ShapesExportResource()),
            partition_key="luna",
            raise_on_error=False,
        )
    assert result.success
    assert metadata(result, "shapes_memories")["records"] == 0
    assert metadata(result, "shapes_export")["export_folder"].startswith("no export (SHAPES_EXPORT_DIR unset")
    assert all(passed for passed, _ in checks(result).values())


def test_a_set_export_path_that_does_not_exist_fails_naming_the_setting(instance, export, tmp_path):
    instance.add_dynamic_partitions(personality_partitions.name, ["luna"])
    with OpenAITestServer() as server:
        result = run(instance, export, server, path=tmp_path / "missing")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"SHAPES_EXPORT_DIR is set to {tmp_path / 'missing'}, which does not exist" in message


def test_a_malformed_mapping_file_fails_the_import_naming_it(instance, export):
    (export.folder / "uuid-mappings.json").write_text("[]")
    instance.add_dynamic_partitions(personality_partitions.name, ["luna"])
    with OpenAITestServer() as server:
        result = run(instance, export, server)
        assert server.requests == []
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert any("uuid-mappings.json is malformed" in m for m in failures)
    assert export.conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
