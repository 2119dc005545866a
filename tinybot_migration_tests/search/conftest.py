"""A new database holding two personas, two personalities and 60 memories with known vectors."""

import uuid
from datetime import datetime, timedelta

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tinybot_migration.lib.ids import deterministic_uuid, persona_seed, personality_seed, user_seed
from tinybot_migration.lib.new_database_schema import apply_new_schema

T0 = datetime(2025, 6, 1)  # naive UTC, as the bot's timestamp(3)
DIM = 1536


def unit(rng, near=None, noise=1.0) -> np.ndarray:
    vector = rng.normal(size=DIM).astype(np.float32) * noise
    if near is not None:
        vector = vector + near
    return vector / np.linalg.norm(vector)


@pytest.fixture
def world(make_database):
    """Two personas of one user, two personalities, 60 memories with known vectors."""
    url = make_database("search")
    conn = psycopg.connect(url, autocommit=True)
    apply_new_schema(conn)
    register_vector(conn)
    user = deterministic_uuid(user_seed("42"))
    conn.execute("INSERT INTO users VALUES (%s, '42', 'someone', %s, %s)", (user, T0, T0))
    personas = {}
    for name, preferred in (("Main", "Léa"), ("Alt", None)):
        pid = personas[name] = deterministic_uuid(persona_seed(user, name))
        conn.execute(
            "INSERT INTO personas (id, name, content, preferred_name, owner_id, created_at, updated_at)"
            " VALUES (%s, %s, 'x', %s, %s, %s, %s)",
            (pid, name, preferred, user, T0, T0),
        )
    personalities = {}
    for slug, display in (("luna", "Luna ✨"), ("nova", None)):
        pid = personalities[slug] = deterministic_uuid(personality_seed(slug))
        conn.execute(
            "INSERT INTO personalities (id, name, display_name, slug, character_info, personality_traits,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, 'c', 't', %s, %s)",
            (pid, slug.title(), display, slug, T0, T0),
        )
    rng = np.random.default_rng(7)
    centre = unit(rng)
    rows = []
    for i in range(60):
        persona = personas["Main"] if i % 3 else personas["Alt"]
        personality = personalities["luna"] if i % 2 else personalities["nova"]
        vector = unit(rng, near=centre * 40, noise=1.0) if i < 30 else unit(rng)
        rows.append(
            (
                uuid.uuid4(),
                persona,
                personality,
                f"{{user}}: note {i}\n{{assistant}}: ok",
                vector,
                T0 + timedelta(days=i),
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memories (id, persona_id, personality_id, content, embedding, created_at, source_system)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'tzurot-v3')",
            rows,
        )
    yield {
        "url": url,
        "conn": conn,
        "personas": personas,
        "personalities": personalities,
        "rows": rows,
        "centre": centre,
    }
    conn.close()
