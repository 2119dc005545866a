"""The bot's memory query as a SQL function of the new DB (in the project's own schema), so the
Python search, the CLI and the checks run the bot's statement: persona required, personality when
given, `created_at < cutoff` (strict), `embedding <=> q < 1 - min_similarity`, nearest first,
`LIMIT k`, with the persona's `name` and `coalesce(display_name, name)` of the personality.

`SEARCH_QUERY` is the function's body with positional parameters ($1 query vector, $2 persona,
$3 personality or NULL, $4 rows, $5 minimum similarity, $6 newest created_at or NULL), so the
checks can EXPLAIN exactly what the function runs and run it exactly (index scans off) as the
reference. It orders by `distance + 0`, which no vector index can serve: the persona's rows are
read through the bot's `memories_persona_id_idx` and ranked exactly. (Which plan serves the bot's
own statement best at scale is decided in its own issue.)
"""

from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, PROJECT_SCHEMA

DEFAULT_LIMIT = 15
DEFAULT_MIN_SIMILARITY = 0.15
SEARCH_INDEX = "memories_persona_id_idx"  # the bot's own index on memories.persona_id
SEARCH_FUNCTION = f"{PROJECT_SCHEMA}.search_memories"

# The bot compares with `$6::timestamptz`, which shifts with the session's TimeZone; read as UTC
# here, it gives the bot's rows under a UTC session and the same rows under any other.
_PERSONA_ROWS = """
        WHERE m.persona_id = $2
          AND ($3::uuid IS NULL OR m.personality_id = $3)
          AND ($6::timestamptz IS NULL OR m.created_at < ($6 AT TIME ZONE 'UTC'))"""

_SCORED = "m.id, m.content, m.created_at, m.persona_id, m.personality_id, m.source_system, 1 - (m.embedding <=> $1) AS score"

# As the bot reads them: {user} and {assistant} replaced by the persona's name and the personality's.
_NAMED = """
    SELECT n.id,
           replace(replace(n.content, '{user}', pa.name),
                   '{assistant}', coalesce(pe.display_name, pe.name)),
           n.score, n.created_at, n.persona_id, pa.name,
           n.personality_id, coalesce(pe.display_name, pe.name), pe.slug, n.source_system
    FROM nearest n
    JOIN personas pa ON pa.id = n.persona_id
    JOIN personalities pe ON pe.id = n.personality_id
    ORDER BY n.score DESC, n.id
"""

# The threshold filters before the LIMIT, as in the bot's statement.
SEARCH_QUERY = f"""
    WITH nearest AS MATERIALIZED (
        SELECT {_SCORED}
        FROM memories m{_PERSONA_ROWS}
          AND m.embedding <=> $1 < 1 - $5
        ORDER BY (m.embedding <=> $1) + 0
        LIMIT $4
    ){_NAMED}"""


def search_function_sql(body: str = SEARCH_QUERY) -> str:
    """The function's DDL (a test installs another body to see the checks fail)."""
    return f"""
CREATE OR REPLACE FUNCTION {SEARCH_FUNCTION}(
    query vector({EMBEDDING_DIMENSIONS}),
    persona uuid,
    personality uuid DEFAULT NULL,
    max_rows integer DEFAULT {DEFAULT_LIMIT},
    min_similarity double precision DEFAULT {DEFAULT_MIN_SIMILARITY},
    exclude_newer_than timestamptz DEFAULT NULL
) RETURNS TABLE (
    id uuid, content text, score double precision, created_at timestamp(3),
    persona_id uuid, persona_name text, personality_id uuid, personality_name text,
    personality_slug text, source_system text
) LANGUAGE sql STABLE PARALLEL SAFE AS $function$
{body}
$function$;
"""


SEARCH_FUNCTION_SQL = search_function_sql()
