-- Named queries, split on "-- name: <name>" headers by schema.py.
-- {schema}, {state}, {conflict_fn} are composed with psycopg.sql.Identifier; values are
-- always parameters.

-- name: load
SELECT data, version, created_at, updated_at
FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s

-- name: load_for_update
SELECT data, version, created_at, updated_at
FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s
FOR UPDATE

-- name: exists
SELECT EXISTS (SELECT FROM {schema}.{state} WHERE type = %(type)s AND id = %(id)s)

-- name: current_version
SELECT version FROM {schema}.{state} WHERE type = %(type)s AND id = %(id)s

-- name: save_lww
INSERT INTO {schema}.{state} AS s (type, id, version, data)
VALUES (%(type)s, %(id)s, 1, %(data)s::jsonb)
ON CONFLICT (type, id) DO UPDATE
    SET version = s.version + 1, data = EXCLUDED.data, payload = NULL, manifest = NULL,
        updated_at = now()
RETURNING version, created_at, updated_at

-- name: save_create
INSERT INTO {schema}.{state} (type, id, version, data)
VALUES (%(type)s, %(id)s, 1, %(data)s::jsonb)
ON CONFLICT (type, id) DO NOTHING
RETURNING version, created_at, updated_at

-- name: save_cas
UPDATE {schema}.{state}
SET version = version + 1, data = %(data)s::jsonb, payload = NULL, manifest = NULL,
    updated_at = now()
WHERE type = %(type)s AND id = %(id)s AND version = %(expected)s
RETURNING version, created_at, updated_at

-- name: delete
DELETE FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s
RETURNING version

-- name: delete_cas
DELETE FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND version = %(expected)s
RETURNING version

-- name: load_many
SELECT id, data, version, created_at, updated_at
FROM {schema}.{state}
WHERE type = %(type)s AND id = ANY(%(ids)s::text[])

-- name: current_versions
SELECT id, version FROM {schema}.{state}
WHERE type = %(type)s AND id = ANY(%(ids)s::text[])

-- name: save_many
-- One statement, so it is atomic in autocommit. Existing rows are locked in id order
-- before any write, and rows are written in id order, so concurrent batches cannot
-- deadlock. A stale expected version writes nothing and returns the conflicts; a
-- concurrent writer slipping in between check and write aborts the statement.
WITH input AS (
    SELECT i.id, i.data, i.expected
    FROM unnest(%(ids)s::text[], %(datas)s::jsonb[], %(expected)s::bigint[])
        AS i(id, data, expected)
),
current AS (
    SELECT s.id, s.version
    FROM {schema}.{state} s
    WHERE s.type = %(type)s AND s.id = ANY(%(ids)s::text[])
    ORDER BY s.id
    FOR UPDATE
),
conflicts AS (
    SELECT i.id, i.expected, coalesce(c.version, 0) AS actual
    FROM input i LEFT JOIN current c ON c.id = i.id
    WHERE i.expected IS NOT NULL AND i.expected <> coalesce(c.version, 0)
),
written AS (
    INSERT INTO {schema}.{state} AS s (type, id, version, data)
    SELECT %(type)s, i.id, 1, i.data
    FROM input i
    WHERE NOT EXISTS (SELECT FROM conflicts)
    ORDER BY i.id
    ON CONFLICT (type, id) DO UPDATE
        SET version = s.version + 1, data = EXCLUDED.data, payload = NULL, manifest = NULL,
            updated_at = now()
    RETURNING s.id, s.version, s.created_at, s.updated_at
)
SELECT true AS ok, w.id, w.version, NULL::bigint AS expected, w.created_at, w.updated_at,
       CASE WHEN i.expected IS NOT NULL AND w.version <> i.expected + 1
            THEN {schema}.{conflict_fn}(%(type)s, w.id) END AS raced
FROM written w JOIN input i ON i.id = w.id
UNION ALL
SELECT false, c.id, c.actual, c.expected, NULL, NULL, NULL
FROM conflicts c

-- name: delete_many
WITH doomed AS (
    SELECT s.id
    FROM {schema}.{state} s
    WHERE s.type = %(type)s AND s.id = ANY(%(ids)s::text[])
    ORDER BY s.id
    FOR UPDATE
)
DELETE FROM {schema}.{state} s
USING doomed d
WHERE s.type = %(type)s AND s.id = d.id

-- name: list_ids
SELECT id
FROM {schema}.{state}
WHERE type = %(type)s AND id > %(after)s AND id >= %(prefix)s AND starts_with(id, %(prefix)s)
ORDER BY id
LIMIT %(limit)s

-- name: types
SELECT type, count(*) FROM {schema}.{state} GROUP BY type ORDER BY type
