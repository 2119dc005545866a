"""Reading an export: every bad input becomes a reason, files that are not arrays an error with the
position, the mapping file is checked as a whole, and the resource says what is configured."""

import json
from datetime import UTC, datetime

import pytest

from tinybot_migration.defs.resources.shapes_export import ShapesExportResource
from tinybot_migration.lib.postgres import jsonb_safe
from tinybot_migration.lib.shapes.export import (
    ShapesExportError,
    parse_memories_file,
    read_mappings,
    survey_export,
)
from tinybot_migration_tests.helpers.shapes_exports import SENDERS, T0, record

NOW = T0.replace(tzinfo=UTC).timestamp() + 86_400


def write(folder, slug, content) -> None:
    (folder / slug).mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / slug / f"{slug}_memories.json").write_text(text, encoding="utf-8")


def reasons(folder, records) -> list[str]:
    write(folder, "luna", records)
    parsed = parse_memories_file(folder, "luna", NOW)
    assert parsed.error is None and parsed.total == len(records)
    return [r.reason for r in parsed.rejected]


def with_metadata(**changes) -> dict:
    good = record([SENDERS[0]], "likes tea")
    good["metadata"].update(changes)
    return good


def test_a_good_record_is_read_with_every_field_converted(tmp_path):
    group = record([SENDERS[0], SENDERS[1].upper(), SENDERS[0]], "a group chat", seconds=1.5, guild="")
    group["summary_type"] = "manual"
    write(tmp_path, "luna", [group, record([SENDERS[2]], "gone", deleted=True)])
    parsed = parse_memories_file(tmp_path, "luna", NOW)
    assert (parsed.total, parsed.deleted, parsed.rejected) == (2, 1, [])
    [kept] = parsed.records
    assert kept.senders == (SENDERS[0], SENDERS[1])  # canonical, each sender once
    assert kept.guild_id is None and kept.channel_id == "111111111111111111"  # "" -> None
    assert kept.summary_type == "manual" and kept.result == "a group chat"
    assert kept.created_at == datetime(2024, 3, 1, 12, 0, 1, 500000)
    assert kept.message_ids == ("900000000000000001", "900000000000000002")
    assert kept.record_id == "900000000000000001/900000000000000002"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"result": None}, "result is missing"),
        ({"result": ""}, "result is empty"),
        ({"result": " \n\t"}, "result holds only whitespace"),
        ({"result": 42}, "result is a number (42), not a string"),
        ({"result": "nul \x00 inside"}, "result holds a NUL character"),
        ({"result": "\ud800 lone surrogate"}, "invalid Unicode"),
        ({"senders": []}, "senders is empty"),
        ({"senders": ["not-a-uuid"]}, "sender 'not-a-uuid' is not a UUID"),
        ({"senders": [7]}, "sender 7 is not a UUID"),
        ({"senders": "a string"}, "senders is a string"),
        ({"deleted": "yes"}, "deleted is a string"),
        ({"summary_type": ["manual"]}, "summary_type is an array, not a string"),
        ({"id": 12}, "id is a number (12), not a string"),
        ({"metadata": None}, "metadata is missing"),
        ({"metadata": []}, "metadata is an array"),
        ({"shape_id": 3}, "shape_id is a number (3), not a string"),
    ],
)
def test_each_bad_record_is_rejected_with_its_reason_and_the_rest_goes_on(tmp_path, bad, reason):
    broken = record([SENDERS[0]], "likes tea")
    for key, value in bad.items():
        if value is None:
            broken.pop(key)
        else:
            broken[key] = value
    if "senders" in bad:
        broken["metadata"]["senders"] = broken["senders"]
    write(tmp_path, "luna", [broken, record([SENDERS[1]], "fine")])
    parsed = parse_memories_file(tmp_path, "luna", NOW)
    assert [r.result for r in parsed.records] == ["fine"]
    [rejected] = parsed.rejected
    assert rejected.index == 0 and reason in rejected.reason
    assert rejected.raw == json.loads(json.dumps(broken)) or "\ud800" in str(bad)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"created_at": None}, "metadata.created_at is missing"),
        ({"created_at": "1709294400"}, "metadata.created_at is a string"),
        ({"created_at": True}, "metadata.created_at is a boolean"),
        ({"created_at": float("nan")}, "metadata.created_at is NaN"),
        ({"created_at": -1.0}, "metadata.created_at is negative"),
        ({"created_at": NOW + 3600}, "is in the future"),
        ({"created_at": 1e300}, "is in the future"),
        ({"discord_channel_id": 123}, "metadata.discord_channel_id is a number"),
        ({"discord_guild_id": "1" * 21}, "more than a Discord id's 20"),
        ({"msg_ids": "1/2"}, "metadata.msg_ids is a string"),
        ({"msg_ids": [1, 2]}, "metadata.msg_ids holds a number"),
        ({"group": "no"}, "metadata.group is a string ('no'), not true or false"),
        ({"start_ts": "noon"}, "metadata.start_ts is a string"),
        ({"end_ts": [1]}, "metadata.end_ts is an array"),
        ({"senders": "x"}, "metadata.senders is not an array of strings"),
    ],
)
def test_bad_metadata_is_rejected_with_its_reason(tmp_path, metadata, reason):
    broken = with_metadata(**metadata)
    if metadata.get("created_at", 0) is None:
        broken["metadata"].pop("created_at")
    assert [r for r in reasons(tmp_path, [broken]) if reason in r], reasons(tmp_path, [broken])


def test_senders_fall_back_to_the_metadata_and_a_record_that_is_not_an_object_is_rejected(tmp_path):
    only_metadata = record([SENDERS[3]], "from metadata")
    only_metadata.pop("senders")
    write(tmp_path, "luna", [only_metadata, "just a string", None])
    parsed = parse_memories_file(tmp_path, "luna", NOW)
    assert parsed.records[0].senders == (SENDERS[3],)
    assert [r.reason for r in parsed.rejected] == [
        "the record is a string ('just a string'), not an object",
        "the record is null, not an object",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[{"id": "a"},\n  {"id": ', "not JSON: Expecting value at line 2, column 10 (character 23)"),
        ('{"memories": []}', "the top level is an object, not an array of records"),
        ("", "not JSON: Expecting value at line 1, column 1 (character 0)"),
        (b"\xff\xfe[]", "not UTF-8 (byte 0"),
    ],
)
def test_a_file_that_is_not_a_json_array_is_an_error_naming_it_and_the_position(tmp_path, text, error):
    (tmp_path / "luna").mkdir()
    path = tmp_path / "luna" / "luna_memories.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    parsed = parse_memories_file(tmp_path, "luna", NOW)
    assert parsed.error.startswith("luna/luna_memories.json: ") and error in parsed.error
    assert parsed.records == [] and parsed.total == 0


def test_a_folder_without_its_memories_file_is_an_error(tmp_path):
    (tmp_path / "luna").mkdir()
    (tmp_path / "luna" / "other.json").write_text("[]")
    assert "has no luna_memories.json" in parse_memories_file(tmp_path, "luna", NOW).error


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "not JSON"),
        ({"mapping": {}}, 'expected {"mappings"'),
        ({"mappings": {"nope": {"discordId": "1"}}}, "the key 'nope' is not a UUID"),
        ({"mappings": {SENDERS[0]: "123"}}, "is a string ('123'), not an object"),
        ({"mappings": {SENDERS[0]: {"discordId": 123}}}, "discordId of"),
        ({"mappings": {SENDERS[0]: {"discordId": "12a"}}}, "a string of 1 to 20 digits"),
        ({"mappings": {SENDERS[0]: {"discordId": "1", "note": 5}}}, "the note of"),
        (
            {"mappings": {SENDERS[0]: {"discordId": "1"}, SENDERS[0].upper(): {"discordId": "2"}}},
            "listed twice",
        ),
    ],
)
def test_a_malformed_mapping_file_is_an_error_naming_it(tmp_path, document, problem):
    path = tmp_path / "uuid-mappings.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ShapesExportError) as raised:
        read_mappings(tmp_path)
    assert str(path) in str(raised.value) and problem in str(raised.value)
    assert "nothing was imported" in str(raised.value)


def test_mappings_are_read_with_canonical_keys_and_a_missing_file_means_none(tmp_path):
    assert read_mappings(tmp_path) is None
    (tmp_path / "uuid-mappings.json").write_text(
        json.dumps({"mappings": {SENDERS[0].upper(): {"discordId": "42", "note": "by hand"}}})
    )
    mapping = read_mappings(tmp_path)[SENDERS[0]]
    assert (mapping.discord_id, mapping.note) == ("42", "by hand")


def test_the_survey_reads_every_folder_and_names_unknown_ones_and_unreadable_files(tmp_path):
    write(tmp_path, "luna", [record([SENDERS[0]], "a"), record([SENDERS[1]], "b", deleted=True)])
    write(tmp_path, "ghost", [record([SENDERS[0]], "c")])
    write(tmp_path, "broken", "[1,")
    (tmp_path / ".hidden").mkdir()
    survey = survey_export(tmp_path, {"luna", "broken"}, NOW)
    assert [p.slug for p in survey.files] == ["broken", "ghost", "luna"]
    luna = survey.files[2]
    # Figures and senders only: the records themselves are not kept.
    assert (luna.total, luna.deleted, luna.rejected, luna.senders) == (2, 1, 0, {SENDERS[0]})
    assert not hasattr(luna, "records")
    assert survey.unknown_folders == ["ghost"]
    assert len(survey.errors) == 1 and survey.errors[0].startswith("broken/broken_memories.json: not JSON")
    assert survey.mappings is None and survey.mapping_error is None


def test_the_export_resource_reports_nothing_to_import_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYBOT_HOME", str(tmp_path / "home"))
    assert ShapesExportResource().folder() is None
    assert "no export (SHAPES_EXPORT_DIR unset" in ShapesExportResource().describe()
    (tmp_path / "home" / "shapes_export").mkdir(parents=True)
    assert ShapesExportResource().folder() == tmp_path / "home" / "shapes_export"
    missing = tmp_path / "nowhere"
    with pytest.raises(
        ShapesExportError, match=f"SHAPES_EXPORT_DIR is set to {missing}, which does not exist"
    ):
        ShapesExportResource(path=str(missing)).folder()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ShapesExportError, match="which is not a folder"):
        ShapesExportResource(path=str(tmp_path / "file")).folder()


def test_raw_records_are_made_storable_as_jsonb():
    raw = {"a": float("nan"), "b": [float("inf"), "nul\x00", "\ud800x"], "c": 1}
    assert jsonb_safe(raw) == {"a": "nan", "b": ["inf", "nul\\u0000", "\\ud800x"], "c": 1}
