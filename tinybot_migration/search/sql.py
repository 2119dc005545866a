"""The bot's memory query as a SQL function of the new DB (in the project's own schema), so the
Python search, the CLI and the checks run the bot's statement: persona required, personality when
given, `created_at < cutoff` (strict), `embedding <=> q < 1 - min_similarity`, nearest first,
`LIMIT k`, with the persona's `name` and `coalesce(display_name, name)` of the personality.

`SEARCH_QUERY` is the function's body with positional parameters ($1 query vector, $2 persona,
$3 personality or NULL, $4 rows, $5 minimum similarity, $6 newest created_at or NULL,
$7 candidates), so the checks can EXPLAIN exactly what the function runs; `EXACT_SEARCH_QUERY`
is the reference the checks measure it against. The search is exact over the persona's rows (read
through the bot's `memories_persona_id_idx`): the binary first pass it had needed a generated
column the bot's schema cannot carry, and the plan is re-decided on the bot's database in its own
issue; until then `candidates` is accepted and has no effect.
"""

from tinybot_migration.schema import EMBEDDING_DIMENSIONS, PROJECT_SCHEMA

DEFAULT_LIMIT = 15
DEFAULT_MIN_SIMILARITY = 0.15
DEFAULT_CANDIDATES = 400
SEARCH_INDEX = "memories_persona_id_idx"  # the bot's own index on memories.persona_id
SEARCH_FUNCTION = f"{PROJECT_SCHEMA}.search_memories"

_PERSONA_ROWS = """
        WHERE m.persona_id = $2
          AND ($3::uuid IS NULL OR m.personality_id = $3)
          AND ($6::timestamptz IS NULL OR m.created_at < $6)"""

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
EXACT_SEARCH_QUERY = f"""
    WITH nearest AS MATERIALIZED (
        SELECT {_SCORED}
        FROM memories m{_PERSONA_ROWS}
          AND m.embedding <=> $1 < 1 - $5
        ORDER BY (m.embedding <=> $1) + 0
        LIMIT $4
    ){{named}}"""
EXACT_SEARCH_QUERY = EXACT_SEARCH_QUERY.replace("{named}", _NAMED)
# `$7 IS NULL OR true`: the function keeps its candidates argument until the plan is re-decided.
SEARCH_QUERY = EXACT_SEARCH_QUERY.replace(
    "        ORDER BY", "          AND ($7::integer IS NULL OR true)\n        ORDER BY", 1
)


def search_function_sql(candidates: int = DEFAULT_CANDIDATES, body: str = SEARCH_QUERY) -> str:
    """The function's DDL; the index asset installs it again with the candidate count it tuned."""
    return f"""
CREATE OR REPLACE FUNCTION {SEARCH_FUNCTION}(
    query vector({EMBEDDING_DIMENSIONS}),
    persona uuid,
    personality uuid DEFAULT NULL,
    max_rows integer DEFAULT {DEFAULT_LIMIT},
    min_similarity double precision DEFAULT {DEFAULT_MIN_SIMILARITY},
    exclude_newer_than timestamptz DEFAULT NULL,
    candidates integer DEFAULT {int(candidates)}
) RETURNS TABLE (
    id uuid, content text, score double precision, created_at timestamp(3),
    persona_id uuid, persona_name text, personality_id uuid, personality_name text,
    personality_slug text, source_system text
) LANGUAGE sql STABLE PARALLEL SAFE AS $function$
{body}
$function$;
"""


SEARCH_FUNCTION_SQL = search_function_sql()
