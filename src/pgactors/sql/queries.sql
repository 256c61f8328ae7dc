-- Named queries, split on "-- name: <name>" headers by schema.py.
-- {schema}, {state}, {conflict_fn} are composed with psycopg.sql.Identifier; values are
-- always parameters.

-- name: load
SELECT data, version, created_at, updated_at, payload, manifest
FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s

-- name: load_for_update
SELECT data, version, created_at, updated_at, payload, manifest
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

-- name: save_binary_lww
INSERT INTO {schema}.{state} AS s (type, id, version, data, payload, manifest)
VALUES (%(type)s, %(id)s, 1, NULL, %(payload)s, %(manifest)s)
ON CONFLICT (type, id) DO UPDATE
    SET version = s.version + 1, data = NULL, payload = EXCLUDED.payload,
        manifest = EXCLUDED.manifest, updated_at = now()
RETURNING version, created_at, updated_at

-- name: save_binary_create
INSERT INTO {schema}.{state} (type, id, version, data, payload, manifest)
VALUES (%(type)s, %(id)s, 1, NULL, %(payload)s, %(manifest)s)
ON CONFLICT (type, id) DO NOTHING
RETURNING version, created_at, updated_at

-- name: save_binary_cas
UPDATE {schema}.{state}
SET version = version + 1, data = NULL, payload = %(payload)s, manifest = %(manifest)s,
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

-- Coalesced single-record operations: concurrent calls share one statement. Each
-- item succeeds or fails on its own; rows are locked in (type, id) order, the same
-- order every batch statement uses, so concurrent batches cannot deadlock. Items
-- travel as JSON arrays (one text parameter each), which costs the client far less
-- to build than PostgreSQL array literals.

-- name: load_batch
SELECT i.ord, s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb)) WITH ORDINALITY AS i(type, id, ord)
JOIN {schema}.{state} s ON s.type = i.type AND s.id = i.id

-- name: save_lww_batch
INSERT INTO {schema}.{state} AS s (type, id, version, data)
SELECT i.type, i.id, 1, i.data
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements(%(datas)s::jsonb)) AS i(type, id, data)
ORDER BY i.type COLLATE "C", i.id COLLATE "C"
ON CONFLICT (type, id) DO UPDATE
    SET version = s.version + 1, data = EXCLUDED.data, payload = NULL, manifest = NULL,
        updated_at = now()
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at

-- name: save_create_batch
INSERT INTO {schema}.{state} AS s (type, id, version, data)
SELECT i.type, i.id, 1, i.data
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements(%(datas)s::jsonb)) AS i(type, id, data)
ORDER BY i.type COLLATE "C", i.id COLLATE "C"
ON CONFLICT (type, id) DO NOTHING
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at

-- name: save_cas_batch
-- Returns the updated rows; the caller reads the versions of the others (stale or
-- absent). Rows are updated in key order (the sorted input drives a nested loop), so
-- two batches do not deadlock; if a plan ever did, the statement is retried whole.
UPDATE {schema}.{state} s
SET version = s.version + 1, data = i.data, payload = NULL, manifest = NULL,
    updated_at = now()
FROM (SELECT *
      FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                      jsonb_array_elements_text(%(ids)s::jsonb),
                      jsonb_array_elements(%(datas)s::jsonb),
                      jsonb_array_elements_text(%(expected)s::jsonb))
           AS i(type, id, data, expected)
      ORDER BY i.type COLLATE "C", i.id COLLATE "C") i
WHERE s.type = i.type AND s.id = i.id AND s.version = i.expected::bigint
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at

-- name: versions_batch
SELECT s.type, s.id, s.version
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb)) AS i(type, id)
JOIN {schema}.{state} s ON s.type = i.type AND s.id = i.id

-- name: load_many
SELECT s.id, s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest
FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id

-- name: current_versions
SELECT s.id, s.version
FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id

-- name: save_many
-- One statement, so it is atomic in autocommit. Existing rows are locked in id order
-- before any write, and rows are written in id order, so concurrent batches cannot
-- deadlock. A stale expected version writes nothing and returns the conflicts; a
-- concurrent writer slipping in between check and write aborts the statement.
WITH input AS (
    SELECT i.id, i.data, i.expected::bigint AS expected
    FROM ROWS FROM (jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements(%(datas)s::jsonb),
                    jsonb_array_elements_text(%(expected)s::jsonb)) AS i(id, data, expected)
),
current AS (
    SELECT s.id, s.version
    FROM {schema}.{state} s JOIN input i ON s.type = %(type)s AND s.id = i.id
    ORDER BY s.id
    FOR UPDATE OF s
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
    FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
    JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id
    ORDER BY s.id
    FOR UPDATE OF s
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

-- Administration: schema installation, verification, status, reset.

-- name: ping
SELECT 1

-- name: advisory_lock
SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.{migrations} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM {schema}.{migrations}

-- name: record_migration
INSERT INTO {schema}.{migrations} (version, name) VALUES (%(version)s, %(name)s)

-- name: migrations_table_exists
SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = %(schema)s AND tablename = %(table)s)

-- name: schema_version
SELECT max(version) FROM {schema}.{migrations}

-- name: schema_objects
SELECT 'table', c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
UNION ALL
SELECT 'index', c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('i', 'I')
UNION ALL
SELECT 'function', p.proname
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'trigger', t.tgname
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.tgisinternal

-- name: server_facts
SELECT current_setting('server_version'), pg_database_size(current_database())

-- name: state_sizes
SELECT pg_table_size(c.oid), pg_indexes_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s

-- name: drop_schema
DROP TABLE IF EXISTS {schema}.{state};
DROP TABLE IF EXISTS {schema}.{changes};
DROP TABLE IF EXISTS {schema}.{feed};
DROP TABLE IF EXISTS {schema}.{migrations};
DROP FUNCTION IF EXISTS {schema}.{conflict_fn}(text, text);
DROP FUNCTION IF EXISTS {schema}.{log_fn}();
DROP FUNCTION IF EXISTS {schema}.{sequence_fn}(text, integer)

-- Change feed (see migrations/0002_change_feed.sql).

-- name: sequence_changes
SELECT {schema}.{sequence_fn}(%(channel)s, %(max_rows)s)

-- name: feed_state
SELECT last_position, pruned_through FROM {schema}.{feed}

-- name: changes_after
SELECT position, type, id, version, op, at
FROM {schema}.{changes}
WHERE position > %(after)s AND position IS NOT NULL
  AND (%(types)s::jsonb IS NULL
       OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb)))
ORDER BY position
LIMIT %(limit)s

-- name: prune_changes
-- The log is in position order and positions are numbered with a rising clock, so
-- the expired rows are a prefix: look only at the oldest chunk each time.
WITH oldest AS (
    SELECT c.seq, c.position, c.at
    FROM {schema}.{changes} c
    WHERE c.position IS NOT NULL
    ORDER BY c.position
    LIMIT %(chunk)s
),
gone AS (
    DELETE FROM {schema}.{changes} c
    USING oldest o
    WHERE c.seq = o.seq AND o.at < now() - make_interval(secs => %(retention)s)
    RETURNING c.position
)
UPDATE {schema}.{feed}
SET pruned_through = greatest(pruned_through, (SELECT max(position) FROM gone))
WHERE EXISTS (SELECT FROM gone)

-- name: feed_stats
SELECT f.last_position, f.pruned_through,
       (SELECT min(position) FROM {schema}.{changes}),
       (SELECT count(*) FROM {schema}.{changes}),
       pg_total_relation_size(to_regclass(quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)))
FROM {schema}.{feed} f

-- Import and export (transfer.py). Export runs in one transaction through a server-side
-- cursor, read a page at a time, so memory stays flat and the output is one snapshot,
-- in (type, id) order.

-- name: export_utc
SET LOCAL TimeZone = 'UTC'

-- name: export_fetch
FETCH FORWARD {{}} FROM pgactors_export

-- name: export_records
DECLARE pgactors_export NO SCROLL CURSOR FOR
SELECT type, id, data, version, created_at, updated_at, payload, manifest
FROM {schema}.{state}
WHERE %(types)s::jsonb IS NULL
   OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb))
ORDER BY type, id

-- name: export_lines
-- The server writes each JSONL line, so the client never decodes and re-encodes data
-- (the format of transfer.record_line; timestamps in UTC, set by export_utc).
DECLARE pgactors_export NO SCROLL CURSOR FOR
SELECT '{{"type":' || to_json(type)::text || ',"id":' || to_json(id)::text
       || ',"version":' || version::text
       || CASE WHEN payload IS NULL THEN ',"data":' || coalesce(data::text, 'null')
               ELSE ',"payload":"' || translate(encode(payload, 'base64'), E'\n', '')
                    || '","manifest":' || to_json(manifest)::text END
       || ',"created_at":' || to_json(created_at)::text
       || ',"updated_at":' || to_json(updated_at)::text || '}}'
FROM {schema}.{state}
WHERE %(types)s::jsonb IS NULL
   OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb))
ORDER BY type, id

-- An import is one transaction. A chunk of records that all carry their version and
-- timestamps is copied straight into the table while none conflicts; otherwise (and
-- from the first conflict on) each chunk is copied into a temporary table, then
-- written with one statement. A NULL version or timestamp is set as save would.

-- name: import_copy_direct
COPY {schema}.{state} (type, id, version, data, payload, manifest, created_at, updated_at)
FROM STDIN (FORMAT binary)

-- name: import_stage
CREATE TEMPORARY TABLE IF NOT EXISTS pgactors_import (
    type       text COLLATE "C",
    id         text COLLATE "C",
    version    bigint,
    data       jsonb,
    payload    bytea,
    manifest   text,
    created_at timestamptz,
    updated_at timestamptz
) ON COMMIT DROP

-- name: import_copy
COPY pgactors_import (type, id, version, data, payload, manifest, created_at, updated_at)
FROM STDIN (FORMAT binary)

-- name: import_clear
TRUNCATE pgactors_import

-- name: import_conflicts
SELECT i.type, i.id
FROM pgactors_import i
JOIN {schema}.{state} s ON s.type = i.type AND s.id = i.id
ORDER BY i.type, i.id
LIMIT 10

-- name: import_insert
INSERT INTO {schema}.{state} AS s
    (type, id, version, data, payload, manifest, created_at, updated_at)
SELECT i.type, i.id, coalesce(i.version, 1), i.data, i.payload, i.manifest,
       coalesce(i.created_at, now()), coalesce(i.updated_at, now())
FROM pgactors_import i
ORDER BY i.type, i.id
ON CONFLICT (type, id) DO NOTHING

-- name: import_insert_new
-- on_conflict=fail: conflicts were checked first; one that raced in is a unique violation.
INSERT INTO {schema}.{state}
    (type, id, version, data, payload, manifest, created_at, updated_at)
SELECT i.type, i.id, coalesce(i.version, 1), i.data, i.payload, i.manifest,
       coalesce(i.created_at, now()), coalesce(i.updated_at, now())
FROM pgactors_import i
ORDER BY i.type, i.id

-- name: import_overwrite
-- Runs before import_insert, which then adds the records that did not exist.
UPDATE {schema}.{state} s
SET version = coalesce(i.version, s.version + 1), data = i.data,
    payload = i.payload, manifest = i.manifest,
    created_at = coalesce(i.created_at, s.created_at), updated_at = coalesce(i.updated_at, now())
FROM (SELECT * FROM pgactors_import ORDER BY type, id) i
WHERE s.type = i.type AND s.id = i.id
