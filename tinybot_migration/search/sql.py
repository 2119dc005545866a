"""The bot's memory query as a SQL function of the new DB, installed with its schema, so the
Python search and the bot's TypeScript services run exactly the same query.

`SEARCH_QUERY` is the function's body with positional parameters ($1 query vector, $2 persona,
$3 personality or NULL, $4 rows, $5 minimum similarity, $6 newest created_at or NULL), so the
checks can EXPLAIN exactly what the function runs.
"""

from tinybot_migration.schema import EMBEDDING_DIMENSIONS

DEFAULT_LIMIT = 15
DEFAULT_MIN_SIMILARITY = 0.15

# Exact cosine distance over the persona's rows, found through the B-tree on persona_id: an HNSW
# index alone cannot serve a filter this selective (DESIGN §5), and the planner picks it anyway
# for a large persona, so the ORDER BY is written (`+ 0`) so that no vector index can serve it.
# The threshold sits outside the nearest rows.
SEARCH_QUERY = """
    WITH nearest AS MATERIALIZED (
        SELECT m.id, m.content, m.created_at, m.persona_id, m.personality_id, m.source_system,
               1 - (m.embedding <=> $1) AS score
        FROM memories m
        WHERE m.persona_id = $2
          AND ($3::uuid IS NULL OR m.personality_id = $3)
          AND ($6::timestamptz IS NULL OR m.created_at <= $6)
          AND m.embedding IS NOT NULL
        ORDER BY (m.embedding <=> $1) + 0
        LIMIT $4
    )
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

SEARCH_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION search_memories(
    query vector({EMBEDDING_DIMENSIONS}),
    persona uuid,
    personality uuid DEFAULT NULL,
    max_rows integer DEFAULT {DEFAULT_LIMIT},
    min_similarity double precision DEFAULT {DEFAULT_MIN_SIMILARITY},
    exclude_newer_than timestamptz DEFAULT NULL
) RETURNS TABLE (
    id uuid, content text, score double precision, created_at timestamptz,
    persona_id uuid, persona_name text, personality_id uuid, personality_name text,
    personality_slug text, source_system text
) LANGUAGE sql STABLE PARALLEL SAFE AS $function$
{SEARCH_QUERY}
$function$;
"""
