"""The bot's memory query as a SQL function of the new DB, installed with its schema, so the
Python search and the bot's TypeScript services run exactly the same query.

`SEARCH_QUERY` is the function's body with positional parameters ($1 query vector, $2 persona,
$3 personality or NULL, $4 rows, $5 minimum similarity, $6 newest created_at or NULL,
$7 candidates), so the checks can EXPLAIN exactly what the function runs; `EXACT_SEARCH_QUERY`
is the same search by exact distance over every row of the persona, the reference the checks
measure it against.

The plan, chosen by measurement (README, "The search plan"): a first pass ranks the persona's
memories by hamming distance between the embeddings' signs (`embedding_bits`), read from the
covering B-tree `SEARCH_INDEX` alone; the best `candidates` (400) are re-ranked by exact cosine
distance, and the threshold applies to those. A persona with at most `candidates` matching rows
is therefore searched exactly. An HNSW index cannot serve this query (DESIGN §5): the persona
filter leaves it a few of the rows it walks, so no ORDER BY here is one an index could serve
(`+ 0`).
"""

from tinybot_migration.schema import EMBEDDING_DIMENSIONS, MEMORIES_SEARCH_INDEX

DEFAULT_LIMIT = 15
DEFAULT_MIN_SIMILARITY = 0.15
DEFAULT_CANDIDATES = 400
SEARCH_INDEX = MEMORIES_SEARCH_INDEX

_PERSONA_ROWS = """
        WHERE m.persona_id = $2
          AND ($3::uuid IS NULL OR m.personality_id = $3)
          AND ($6::timestamptz IS NULL OR m.created_at <= $6)"""

_SCORED = "m.id, m.content, m.created_at, m.persona_id, m.personality_id, m.source_system, 1 - (m.embedding <=> $1) AS score"

# The names replace {user} and {assistant}; the threshold applies to the nearest rows.
_NAMED = """
    SELECT n.id,
           replace(replace(n.content, '{user}', coalesce(pa.preferred_name, pa.name)),
                   '{assistant}', coalesce(pe.display_name, pe.name)),
           n.score, n.created_at, n.persona_id, coalesce(pa.preferred_name, pa.name),
           n.personality_id, coalesce(pe.display_name, pe.name), pe.slug, n.source_system
    FROM nearest n
    JOIN personas pa ON pa.id = n.persona_id
    JOIN personalities pe ON pe.id = n.personality_id
    WHERE n.score >= $5
    ORDER BY n.score DESC, n.id
"""

SEARCH_QUERY = f"""
    WITH candidates AS MATERIALIZED (
        SELECT m.id
        FROM memories m{_PERSONA_ROWS}
          AND m.embedding_bits IS NOT NULL
        ORDER BY m.embedding_bits <~> (SELECT binary_quantize($1)::bit({EMBEDDING_DIMENSIONS}))
        LIMIT greatest($7, $4)
    ), nearest AS MATERIALIZED (
        SELECT {_SCORED}
        FROM candidates c JOIN memories m ON m.id = c.id
        ORDER BY (m.embedding <=> $1) + 0
        LIMIT $4
    ){_NAMED}"""

EXACT_SEARCH_QUERY = f"""
    WITH nearest AS MATERIALIZED (
        SELECT {_SCORED}
        FROM memories m{_PERSONA_ROWS}
          AND m.embedding IS NOT NULL
        ORDER BY (m.embedding <=> $1) + 0
        LIMIT $4
    ){_NAMED}"""


def search_function_sql(candidates: int = DEFAULT_CANDIDATES, body: str = SEARCH_QUERY) -> str:
    """The function's DDL; the index asset installs it again with the candidate count it tuned."""
    return f"""
DROP FUNCTION IF EXISTS search_memories(vector, uuid, uuid, integer, double precision, timestamptz);
CREATE OR REPLACE FUNCTION search_memories(
    query vector({EMBEDDING_DIMENSIONS}),
    persona uuid,
    personality uuid DEFAULT NULL,
    max_rows integer DEFAULT {DEFAULT_LIMIT},
    min_similarity double precision DEFAULT {DEFAULT_MIN_SIMILARITY},
    exclude_newer_than timestamptz DEFAULT NULL,
    candidates integer DEFAULT {int(candidates)}
) RETURNS TABLE (
    id uuid, content text, score double precision, created_at timestamptz,
    persona_id uuid, persona_name text, personality_id uuid, personality_name text,
    personality_slug text, source_system text
) LANGUAGE sql STABLE PARALLEL SAFE AS $function$
{body}
$function$;
"""


SEARCH_FUNCTION_SQL = search_function_sql()
