"""The SQL mirror of every seed gives exactly the Python seed, on the real server."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from tinybot_migration.lib import ids
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES

OWNER = uuid.UUID("04b130b8-52dd-5cd3-9560-f57949634d00")
TRICKY_TEXT = "Zoë \\ back\tslash\nnew 'line' 👩‍💻 مرحبا 漢字"
NAIVE = datetime(2025, 3, 4, 5, 6, 7, 891000)

SAMPLE_VALUES = {
    "discord_id": "123456789012345678",
    "owner_id": OWNER,
    "name": TRICKY_TEXT,
    "slug": "zoë-1",
    "user_id": OWNER,
    "personality_id": uuid.UUID(int=1),
    "persona_id": uuid.UUID(int=2),
    "channel_id": "998877665544332211",
    "created_at": NAIVE,
    "role": "assistant",
    "content": TRICKY_TEXT,
}


@pytest.mark.parametrize("spec", [s for s in RELATIONAL_TABLES if s.has_id], ids=lambda s: s.name)
def test_sql_seed_equals_python_seed(spec, make_database):
    values = [SAMPLE_VALUES[c] for c in spec.seed_columns]
    expressions = [sql.Literal(v.isoformat(sep=" ") if isinstance(v, datetime) else str(v)) for v in values]
    with psycopg.connect(make_database("seeds")) as conn:
        conn.execute("SET TimeZone = 'Pacific/Chatham'")  # an odd offset must change nothing
        # Literals typed as the columns are: timestamp (naive UTC) and uuid.
        rendered = [
            sql.SQL("{}::timestamp").format(e).as_string(conn)
            if isinstance(v, datetime)
            else sql.SQL("{}::uuid").format(e).as_string(conn)
            if isinstance(v, uuid.UUID)
            else e.as_string(conn)
            for v, e in zip(values, expressions, strict=True)
        ]
        from_sql = conn.execute(f"SELECT {spec.seed_sql(*rendered)}").fetchone()[0]
        # And a timestamptz column holding the same instant (the new DB's type) gives the same seed.
        aware = [r.replace("::timestamp", "::timestamp AT TIME ZONE 'UTC'") for r in rendered]
        from_sql_aware = conn.execute(f"SELECT {spec.seed_sql(*aware)}").fetchone()[0]
    assert from_sql == spec.seed(*values)
    assert from_sql_aware == from_sql


def test_llm_config_seed_without_owner_is_global(make_database):
    with psycopg.connect(make_database("seeds")) as conn:
        expression = ids.llm_config_seed_sql("NULL::uuid", "'Fast'")
        seed = conn.execute(f"SELECT {expression}").fetchone()[0]
    assert seed == ids.llm_config_seed(None, "Fast") == "llm_config:global:Fast"


def test_uuid5_text_matches_the_standard_library():
    for i in range(2000):
        seed = f"seed {i} {TRICKY_TEXT}"
        assert ids.uuid5_text(seed.encode()) == str(uuid.uuid5(uuid.NAMESPACE_DNS, seed))
    aware = NAIVE.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=13, minutes=45)))
    assert ids.epoch_microseconds(aware) == ids.epoch_microseconds(NAIVE)
