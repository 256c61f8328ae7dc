-- Named queries, split on "-- name: <name>" headers by schema.py.
-- {schema}, {state}, {conflict_fn} are composed with psycopg.sql.Identifier; values are
-- always parameters.

-- An expired record (expires_at <= now()) is absent to every query until it is purged.

-- name: load
SELECT data, version, created_at, updated_at, payload, manifest, expires_at
FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND (expires_at IS NULL OR expires_at > now())

-- name: load_for_update
SELECT data, version, created_at, updated_at, payload, manifest, expires_at
FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND (expires_at IS NULL OR expires_at > now())
FOR UPDATE

-- name: exists
SELECT EXISTS (SELECT FROM {schema}.{state}
               WHERE type = %(type)s AND id = %(id)s
                 AND (expires_at IS NULL OR expires_at > now()))

-- name: current_version
SELECT version FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND (expires_at IS NULL OR expires_at > now())

-- Saves take %(ttl)s (seconds or NULL) and %(sliding)s. A save without a ttl clears
-- the expiry, unless the record slides (ttl_seconds set): then it gets that long again.
-- A save over an expired row makes a new record: version 1, new created_at.

-- name: save_lww
INSERT INTO {schema}.{state} AS s (type, id, version, data, expires_at, ttl_seconds)
VALUES (%(type)s, %(id)s, 1, %(data)s::jsonb,
        now() + %(ttl)s::float8 * interval '1 second',
        CASE WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END)
ON CONFLICT (type, id) DO UPDATE
    SET version = CASE WHEN s.expires_at <= now() THEN 1 ELSE s.version + 1 END,
        created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
        data = EXCLUDED.data, payload = NULL, manifest = NULL, updated_at = now(),
        expires_at = coalesce(EXCLUDED.expires_at, CASE WHEN s.expires_at > now()
                              THEN now() + s.ttl_seconds * interval '1 second' END),
        ttl_seconds = CASE WHEN EXCLUDED.expires_at IS NULL AND s.expires_at > now()
                           THEN s.ttl_seconds ELSE EXCLUDED.ttl_seconds END
RETURNING version, created_at, updated_at, expires_at

-- name: save_create
INSERT INTO {schema}.{state} AS s (type, id, version, data, expires_at, ttl_seconds)
VALUES (%(type)s, %(id)s, 1, %(data)s::jsonb,
        now() + %(ttl)s::float8 * interval '1 second',
        CASE WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END)
ON CONFLICT (type, id) DO UPDATE
    SET version = 1, created_at = now(), updated_at = now(),
        data = EXCLUDED.data, payload = NULL, manifest = NULL,
        expires_at = EXCLUDED.expires_at, ttl_seconds = EXCLUDED.ttl_seconds
    WHERE s.expires_at <= now()
RETURNING version, created_at, updated_at, expires_at

-- name: save_cas
UPDATE {schema}.{state}
SET version = version + 1, data = %(data)s::jsonb, payload = NULL, manifest = NULL,
    updated_at = now(),
    expires_at = coalesce(now() + %(ttl)s::float8 * interval '1 second',
                          now() + ttl_seconds * interval '1 second'),
    ttl_seconds = CASE WHEN %(ttl)s::float8 IS NULL THEN ttl_seconds
                       WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END
WHERE type = %(type)s AND id = %(id)s AND version = %(expected)s
  AND (expires_at IS NULL OR expires_at > now())
RETURNING version, created_at, updated_at, expires_at

-- name: save_binary_lww
INSERT INTO {schema}.{state} AS s
    (type, id, version, data, payload, manifest, expires_at, ttl_seconds)
VALUES (%(type)s, %(id)s, 1, NULL, %(payload)s, %(manifest)s,
        now() + %(ttl)s::float8 * interval '1 second',
        CASE WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END)
ON CONFLICT (type, id) DO UPDATE
    SET version = CASE WHEN s.expires_at <= now() THEN 1 ELSE s.version + 1 END,
        created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
        data = NULL, payload = EXCLUDED.payload, manifest = EXCLUDED.manifest,
        updated_at = now(),
        expires_at = coalesce(EXCLUDED.expires_at, CASE WHEN s.expires_at > now()
                              THEN now() + s.ttl_seconds * interval '1 second' END),
        ttl_seconds = CASE WHEN EXCLUDED.expires_at IS NULL AND s.expires_at > now()
                           THEN s.ttl_seconds ELSE EXCLUDED.ttl_seconds END
RETURNING version, created_at, updated_at, expires_at

-- name: save_binary_create
INSERT INTO {schema}.{state} AS s
    (type, id, version, data, payload, manifest, expires_at, ttl_seconds)
VALUES (%(type)s, %(id)s, 1, NULL, %(payload)s, %(manifest)s,
        now() + %(ttl)s::float8 * interval '1 second',
        CASE WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END)
ON CONFLICT (type, id) DO UPDATE
    SET version = 1, created_at = now(), updated_at = now(),
        data = NULL, payload = EXCLUDED.payload, manifest = EXCLUDED.manifest,
        expires_at = EXCLUDED.expires_at, ttl_seconds = EXCLUDED.ttl_seconds
    WHERE s.expires_at <= now()
RETURNING version, created_at, updated_at, expires_at

-- name: save_binary_cas
UPDATE {schema}.{state}
SET version = version + 1, data = NULL, payload = %(payload)s, manifest = %(manifest)s,
    updated_at = now(),
    expires_at = coalesce(now() + %(ttl)s::float8 * interval '1 second',
                          now() + ttl_seconds * interval '1 second'),
    ttl_seconds = CASE WHEN %(ttl)s::float8 IS NULL THEN ttl_seconds
                       WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END
WHERE type = %(type)s AND id = %(id)s AND version = %(expected)s
  AND (expires_at IS NULL OR expires_at > now())
RETURNING version, created_at, updated_at, expires_at

-- An expired row is left to the purge: deleting it reports False.

-- name: delete
DELETE FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND (expires_at IS NULL OR expires_at > now())
RETURNING version

-- name: delete_cas
DELETE FROM {schema}.{state}
WHERE type = %(type)s AND id = %(id)s AND version = %(expected)s
  AND (expires_at IS NULL OR expires_at > now())
RETURNING version

-- Coalesced single-record operations: concurrent calls share one statement. Each
-- item succeeds or fails on its own; rows are locked in (type, id) order, the same
-- order every batch statement uses, so concurrent batches cannot deadlock. Items
-- travel as JSON arrays (one text parameter each), which costs the client far less
-- to build than PostgreSQL array literals. The planner cannot see how many items
-- a JSON array holds (it assumes 100), so on a small or bloated table it would join
-- by scanning the whole state table; every batch therefore also restricts the table
-- with `= ANY (ARRAY(...))` on the key columns, which it always reads by primary key,
-- or (loads) probes it once per key from a LATERAL subquery.

-- name: load_batch
-- LIMIT 1 keeps the subquery from being flattened into a join, which the planner could
-- make by scanning; the `= ANY` restriction cost the server about a fifth more per batch.
SELECT i.ord, s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest,
       s.expires_at
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb)) WITH ORDINALITY AS i(type, id, ord)
CROSS JOIN LATERAL (
    SELECT s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest, s.expires_at
    FROM {schema}.{state} s
    WHERE s.type = i.type AND s.id = i.id AND (s.expires_at IS NULL OR s.expires_at > now())
    LIMIT 1) s

-- name: save_lww_batch
INSERT INTO {schema}.{state} AS s (type, id, version, data, expires_at, ttl_seconds)
SELECT i.type, i.id, 1, i.data, now() + i.ttl::float8 * interval '1 second',
       CASE WHEN i.sliding::boolean THEN i.ttl::float8 END
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements(%(datas)s::jsonb),
                jsonb_array_elements_text(%(ttls)s::jsonb),
                jsonb_array_elements_text(%(slidings)s::jsonb)) AS i(type, id, data, ttl, sliding)
ORDER BY i.type COLLATE "C", i.id COLLATE "C"
ON CONFLICT (type, id) DO UPDATE
    SET version = CASE WHEN s.expires_at <= now() THEN 1 ELSE s.version + 1 END,
        created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
        data = EXCLUDED.data, payload = NULL, manifest = NULL, updated_at = now(),
        expires_at = coalesce(EXCLUDED.expires_at, CASE WHEN s.expires_at > now()
                              THEN now() + s.ttl_seconds * interval '1 second' END),
        ttl_seconds = CASE WHEN EXCLUDED.expires_at IS NULL AND s.expires_at > now()
                           THEN s.ttl_seconds ELSE EXCLUDED.ttl_seconds END
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at

-- name: save_create_batch
INSERT INTO {schema}.{state} AS s (type, id, version, data, expires_at, ttl_seconds)
SELECT i.type, i.id, 1, i.data, now() + i.ttl::float8 * interval '1 second',
       CASE WHEN i.sliding::boolean THEN i.ttl::float8 END
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements(%(datas)s::jsonb),
                jsonb_array_elements_text(%(ttls)s::jsonb),
                jsonb_array_elements_text(%(slidings)s::jsonb)) AS i(type, id, data, ttl, sliding)
ORDER BY i.type COLLATE "C", i.id COLLATE "C"
ON CONFLICT (type, id) DO UPDATE
    SET version = 1, created_at = now(), updated_at = now(),
        data = EXCLUDED.data, payload = NULL, manifest = NULL,
        expires_at = EXCLUDED.expires_at, ttl_seconds = EXCLUDED.ttl_seconds
    WHERE s.expires_at <= now()
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at

-- name: save_cas_batch
-- Returns the updated rows; the caller reads the versions of the others (stale or
-- absent). Rows are updated in key order (the sorted input drives a nested loop), so
-- two batches do not deadlock; if a plan ever did, the statement is retried whole.
UPDATE {schema}.{state} s
SET version = s.version + 1, data = i.data, payload = NULL, manifest = NULL,
    updated_at = now(),
    expires_at = coalesce(now() + i.ttl::float8 * interval '1 second',
                          now() + s.ttl_seconds * interval '1 second'),
    ttl_seconds = CASE WHEN i.ttl IS NULL THEN s.ttl_seconds
                       WHEN i.sliding::boolean THEN i.ttl::float8 END
FROM (SELECT *
      FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                      jsonb_array_elements_text(%(ids)s::jsonb),
                      jsonb_array_elements(%(datas)s::jsonb),
                      jsonb_array_elements_text(%(expected)s::jsonb),
                      jsonb_array_elements_text(%(ttls)s::jsonb),
                      jsonb_array_elements_text(%(slidings)s::jsonb))
           AS i(type, id, data, expected, ttl, sliding)
      ORDER BY i.type COLLATE "C", i.id COLLATE "C") i
WHERE s.type = i.type AND s.id = i.id AND s.version = i.expected::bigint
  AND s.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND (s.expires_at IS NULL OR s.expires_at > now())
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at

-- name: save_lww_batch_plain
-- save_lww_batch for a batch in which no save has a ttl (most of them): no ttl or
-- sliding parameters to parse, no expiry computed for new rows; an existing row gets
-- what such a save does in save_lww_batch (a sliding expiry slides, a fixed one is
-- cleared). It takes 4-6% less time (benchmarks/batch_statements.py).
INSERT INTO {schema}.{state} AS s (type, id, version, data)
SELECT i.type, i.id, 1, i.data
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements(%(datas)s::jsonb)) AS i(type, id, data)
ORDER BY i.type COLLATE "C", i.id COLLATE "C"
ON CONFLICT (type, id) DO UPDATE
    SET version = CASE WHEN s.expires_at <= now() THEN 1 ELSE s.version + 1 END,
        created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
        data = EXCLUDED.data, payload = NULL, manifest = NULL, updated_at = now(),
        expires_at = CASE WHEN s.expires_at > now()
                          THEN now() + s.ttl_seconds * interval '1 second' END,
        ttl_seconds = CASE WHEN s.expires_at > now() THEN s.ttl_seconds END
RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at

-- name: save_call_batch
-- Save states and record the calls that produced them, in one statement. An item
-- with expected 0 creates its record; the others are compare-and-set. An item whose
-- call_id is already recorded for its record is not applied again. Items not saved
-- (stale version, or call already applied) return no row: the caller finds out which.
-- A binary state travels as base64 in payloads with its manifest (data is then null).
-- Rows find their items by key in one JSON object (m) instead of joining the batch: a
-- join planned while the table was small scans the whole batch once per row.
WITH i AS (
    SELECT i.type, i.id, i.data, i.payload, i.manifest, i.expected::bigint AS expected,
           i.call_id, i.result
    FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                    jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements(%(datas)s::jsonb),
                    jsonb_array_elements_text(%(payloads)s::jsonb),
                    jsonb_array_elements_text(%(manifests)s::jsonb),
                    jsonb_array_elements_text(%(expected)s::jsonb),
                    jsonb_array_elements_text(%(call_ids)s::jsonb),
                    jsonb_array_elements(%(results)s::jsonb))
         AS i(type, id, data, payload, manifest, expected, call_id, result)
    WHERE NOT EXISTS (
        SELECT FROM {schema}.{calls} c
        WHERE c.type = i.type AND c.id = i.id AND c.call_id = i.call_id
          AND c.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
          AND c.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
          AND c.call_id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(call_ids)s::jsonb))))
    ORDER BY i.type COLLATE "C", i.id COLLATE "C"
), m AS MATERIALIZED (
    SELECT jsonb_object_agg(i.type || chr(31) || i.id, jsonb_build_object(
               'data', i.data, 'payload', i.payload, 'manifest', i.manifest,
               'expected', i.expected, 'call_id', i.call_id, 'result', i.result)) AS items
    FROM i
), created AS (
    INSERT INTO {schema}.{state} AS s (type, id, version, data, payload, manifest)
    SELECT i.type, i.id, 1, CASE WHEN i.manifest IS NULL THEN i.data END,
           decode(i.payload, 'base64'), i.manifest
    FROM i WHERE i.expected = 0
    ON CONFLICT (type, id) DO UPDATE
        SET version = 1, created_at = now(), updated_at = now(),
            data = EXCLUDED.data, payload = EXCLUDED.payload, manifest = EXCLUDED.manifest,
            expires_at = NULL, ttl_seconds = NULL
        WHERE s.expires_at <= now()
    RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at
), updated AS (
    UPDATE {schema}.{state} s
    SET version = s.version + 1,
        data = CASE WHEN m.items -> (s.type || chr(31) || s.id) ->> 'manifest' IS NULL
                    THEN m.items -> (s.type || chr(31) || s.id) -> 'data' END,
        payload = decode(m.items -> (s.type || chr(31) || s.id) ->> 'payload', 'base64'),
        manifest = m.items -> (s.type || chr(31) || s.id) ->> 'manifest',
        updated_at = now(), expires_at = now() + s.ttl_seconds * interval '1 second'
    FROM m
    WHERE s.version = (m.items -> (s.type || chr(31) || s.id) ->> 'expected')::bigint
      AND s.version > 0
      AND s.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
      AND s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
      AND (s.expires_at IS NULL OR s.expires_at > now())
    RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at
), saved AS (
    SELECT * FROM created UNION ALL SELECT * FROM updated
), recorded AS (
    INSERT INTO {schema}.{calls} (type, id, call_id, result)
    SELECT s.type, s.id, m.items -> (s.type || chr(31) || s.id) ->> 'call_id',
           m.items -> (s.type || chr(31) || s.id) -> 'result'
    FROM saved s, m
)
SELECT * FROM saved

-- name: fire_reminders_batch
-- Firings: as save_call_batch, and each fired reminder moved on in the same statement
-- (as advance_reminders) when its call is saved here or was recorded before. A stale
-- version moves nothing: the reminder stays due, and is fired again.
-- As in save_call_batch, rows find their items by key in JSON objects (m, f); the
-- keys' arrays (k) let the tables be read by index.
WITH k AS MATERIALIZED (
    SELECT ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)) AS types,
           ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)) AS ids,
           ARRAY(SELECT jsonb_array_elements_text(%(names)s::jsonb)) AS names,
           ARRAY(SELECT jsonb_array_elements_text(%(call_ids)s::jsonb)) AS call_ids
), a AS (
    SELECT a.type, a.id, a.data, a.payload, a.manifest, a.expected::bigint AS expected,
           a.call_id, a.result, a.name, a.due_at::timestamptz AS due_at,
           EXISTS (
               SELECT FROM {schema}.{calls} c
               WHERE c.type = a.type AND c.id = a.id AND c.call_id = a.call_id
                 AND c.type = ANY ((SELECT k.types FROM k)::text[])
                 AND c.id = ANY ((SELECT k.ids FROM k)::text[])
                 AND c.call_id = ANY ((SELECT k.call_ids FROM k)::text[])
           ) AS applied
    FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                    jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements(%(datas)s::jsonb),
                    jsonb_array_elements_text(%(payloads)s::jsonb),
                    jsonb_array_elements_text(%(manifests)s::jsonb),
                    jsonb_array_elements_text(%(expected)s::jsonb),
                    jsonb_array_elements_text(%(call_ids)s::jsonb),
                    jsonb_array_elements(%(results)s::jsonb),
                    jsonb_array_elements_text(%(names)s::jsonb),
                    jsonb_array_elements_text(%(dues)s::jsonb))
         AS a(type, id, data, payload, manifest, expected, call_id, result, name, due_at)
), i AS (
    SELECT * FROM a WHERE NOT a.applied ORDER BY a.type COLLATE "C", a.id COLLATE "C"
), m AS MATERIALIZED (
    SELECT jsonb_object_agg(i.type || chr(31) || i.id, jsonb_build_object(
               'data', i.data, 'payload', i.payload, 'manifest', i.manifest,
               'expected', i.expected, 'call_id', i.call_id, 'result', i.result)) AS items
    FROM i
), created AS (
    INSERT INTO {schema}.{state} AS s (type, id, version, data, payload, manifest)
    SELECT i.type, i.id, 1, CASE WHEN i.manifest IS NULL THEN i.data END,
           decode(i.payload, 'base64'), i.manifest
    FROM i WHERE i.expected = 0
    ON CONFLICT (type, id) DO UPDATE
        SET version = 1, created_at = now(), updated_at = now(),
            data = EXCLUDED.data, payload = EXCLUDED.payload, manifest = EXCLUDED.manifest,
            expires_at = NULL, ttl_seconds = NULL
        WHERE s.expires_at <= now()
    RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at
), updated AS (
    UPDATE {schema}.{state} s
    SET version = s.version + 1,
        data = CASE WHEN m.items -> (s.type || chr(31) || s.id) ->> 'manifest' IS NULL
                    THEN m.items -> (s.type || chr(31) || s.id) -> 'data' END,
        payload = decode(m.items -> (s.type || chr(31) || s.id) ->> 'payload', 'base64'),
        manifest = m.items -> (s.type || chr(31) || s.id) ->> 'manifest',
        updated_at = now(), expires_at = now() + s.ttl_seconds * interval '1 second'
    FROM m
    WHERE s.version = (m.items -> (s.type || chr(31) || s.id) ->> 'expected')::bigint
      AND s.version > 0
      AND s.type = ANY ((SELECT k.types FROM k)::text[])
      AND s.id = ANY ((SELECT k.ids FROM k)::text[])
      AND (s.expires_at IS NULL OR s.expires_at > now())
    RETURNING s.type, s.id, s.version, s.created_at, s.updated_at, s.expires_at
), saved AS (
    SELECT * FROM created UNION ALL SELECT * FROM updated
), recorded AS (
    INSERT INTO {schema}.{calls} (type, id, call_id, result)
    SELECT s.type, s.id, m.items -> (s.type || chr(31) || s.id) ->> 'call_id',
           m.items -> (s.type || chr(31) || s.id) -> 'result'
    FROM saved s, m
), f AS MATERIALIZED (
    -- The reminders to move on: their call is saved here, or was recorded before.
    SELECT jsonb_object_agg(a.type || chr(31) || a.id || chr(31) || a.name, a.due_at) AS dues
    FROM a
    WHERE a.applied OR EXISTS (SELECT FROM saved s WHERE s.type = a.type AND s.id = a.id)
), gone AS (
    DELETE FROM {schema}.{reminders} r USING f
    WHERE r.due_at = (f.dues ->> (r.type || chr(31) || r.id || chr(31) || r.name))::timestamptz
      AND r.period IS NULL
      AND r.type = ANY ((SELECT k.types FROM k)::text[])
      AND r.id = ANY ((SELECT k.ids FROM k)::text[])
      AND r.name = ANY ((SELECT k.names FROM k)::text[])
), moved AS (
    UPDATE {schema}.{reminders} r
    SET due_at = r.due_at + r.period * interval '1 second'
                 * (floor(extract(epoch FROM now() - r.due_at) / r.period) + 1),
        leased_until = NULL
    FROM f
    WHERE r.due_at = (f.dues ->> (r.type || chr(31) || r.id || chr(31) || r.name))::timestamptz
      AND r.period IS NOT NULL
      AND r.type = ANY ((SELECT k.types FROM k)::text[])
      AND r.id = ANY ((SELECT k.ids FROM k)::text[])
      AND r.name = ANY ((SELECT k.names FROM k)::text[])
)
SELECT * FROM saved

-- name: applied_calls
SELECT c.type, c.id, c.call_id, c.result, c.applied_at
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb),
                jsonb_array_elements_text(%(call_ids)s::jsonb)) AS i(type, id, call_id)
JOIN {schema}.{calls} c ON c.type = i.type AND c.id = i.id AND c.call_id = i.call_id
WHERE c.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND c.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND c.call_id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(call_ids)s::jsonb)))

-- name: purge_calls
-- One bounded batch of calls recorded before the retention; SKIP LOCKED as for expiry.
WITH doomed AS (
    SELECT ctid FROM {schema}.{calls}
    WHERE applied_at < now() - %(older_than)s::float8 * interval '1 second'
      AND (%(prefix)s::text IS NULL OR starts_with(call_id, %(prefix)s::text))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.{calls} c USING doomed d WHERE c.ctid = d.ctid

-- name: versions_batch
SELECT s.type, s.id, s.version
FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                jsonb_array_elements_text(%(ids)s::jsonb)) AS i(type, id)
JOIN {schema}.{state} s ON s.type = i.type AND s.id = i.id
WHERE s.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND (s.expires_at IS NULL OR s.expires_at > now())

-- name: load_many
SELECT s.id, s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest,
       s.expires_at
FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id
WHERE s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND (s.expires_at IS NULL OR s.expires_at > now())

-- name: current_versions
SELECT s.id, s.version
FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id
WHERE s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND (s.expires_at IS NULL OR s.expires_at > now())

-- name: save_many
-- One statement, so it is atomic in autocommit. Existing rows are locked in id order
-- before any write, and rows are written in id order, so concurrent batches cannot
-- deadlock. A stale expected version writes nothing and returns the conflicts; a
-- concurrent writer slipping in between check and write aborts the statement. Expired
-- rows count as version 0 (locked all the same, then overwritten as new records).
WITH input AS (
    SELECT i.id, i.data, i.expected::bigint AS expected
    FROM ROWS FROM (jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements(%(datas)s::jsonb),
                    jsonb_array_elements_text(%(expected)s::jsonb)) AS i(id, data, expected)
),
current AS (
    SELECT s.id, CASE WHEN s.expires_at <= now() THEN 0 ELSE s.version END AS version
    FROM {schema}.{state} s JOIN input i ON s.type = %(type)s AND s.id = i.id
    WHERE s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
    ORDER BY s.id
    FOR UPDATE OF s
),
conflicts AS (
    SELECT i.id, i.expected, coalesce(c.version, 0) AS actual
    FROM input i LEFT JOIN current c ON c.id = i.id
    WHERE i.expected IS NOT NULL AND i.expected <> coalesce(c.version, 0)
),
written AS (
    INSERT INTO {schema}.{state} AS s (type, id, version, data, expires_at, ttl_seconds)
    SELECT %(type)s, i.id, 1, i.data, now() + %(ttl)s::float8 * interval '1 second',
           CASE WHEN %(sliding)s::boolean THEN %(ttl)s::float8 END
    FROM input i
    WHERE NOT EXISTS (SELECT FROM conflicts)
    ORDER BY i.id
    ON CONFLICT (type, id) DO UPDATE
        SET version = CASE WHEN s.expires_at <= now() THEN 1 ELSE s.version + 1 END,
            created_at = CASE WHEN s.expires_at <= now() THEN now() ELSE s.created_at END,
            data = EXCLUDED.data, payload = NULL, manifest = NULL, updated_at = now(),
            expires_at = coalesce(EXCLUDED.expires_at, CASE WHEN s.expires_at > now()
                                  THEN now() + s.ttl_seconds * interval '1 second' END),
            ttl_seconds = CASE WHEN EXCLUDED.expires_at IS NULL AND s.expires_at > now()
                               THEN s.ttl_seconds ELSE EXCLUDED.ttl_seconds END
    RETURNING s.id, s.version, s.created_at, s.updated_at, s.expires_at
)
SELECT true AS ok, w.id, w.version, NULL::bigint AS expected, w.created_at, w.updated_at,
       CASE WHEN i.expected IS NOT NULL AND w.version <> i.expected + 1
            THEN {schema}.{conflict_fn}(%(type)s, w.id) END AS raced,
       w.expires_at
FROM written w JOIN input i ON i.id = w.id
UNION ALL
SELECT false, c.id, c.actual, c.expected, NULL, NULL, NULL, NULL
FROM conflicts c

-- name: delete_many
WITH doomed AS (
    SELECT s.id
    FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i(id)
    JOIN {schema}.{state} s ON s.type = %(type)s AND s.id = i.id
    WHERE s.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
      AND (s.expires_at IS NULL OR s.expires_at > now())
    ORDER BY s.id
    FOR UPDATE OF s
)
DELETE FROM {schema}.{state} s
WHERE s.type = %(type)s AND s.id = ANY (ARRAY(SELECT d.id FROM doomed d))

-- name: list_ids
SELECT id
FROM {schema}.{state}
WHERE type = %(type)s AND id > %(after)s AND id >= %(prefix)s AND starts_with(id, %(prefix)s)
  AND (expires_at IS NULL OR expires_at > now())
ORDER BY id
LIMIT %(limit)s

-- name: types
SELECT type, count(*) FROM {schema}.{state}
WHERE expires_at IS NULL OR expires_at > now()
GROUP BY type ORDER BY type

-- name: purge_expired
-- One bounded batch of expired rows, oldest expiry first (the partial index on
-- expires_at). SKIP LOCKED: rows a writer holds (perhaps saving them anew) and rows
-- another purger took are left for the next batch, so purgers never wait or deadlock.
-- The delete goes through the state triggers: each purged record is a 'delete' change.
WITH doomed AS (
    SELECT s.type, s.id
    FROM {schema}.{state} s
    WHERE s.expires_at <= now() AND (%(type)s::text IS NULL OR s.type = %(type)s::text)
    ORDER BY s.expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.{state} s
USING doomed d
WHERE s.type = d.type AND s.id = d.id AND s.expires_at <= now()

-- Queries (store.query/count/aggregate): postgres/compiler.py composes the filter,
-- ordering and keyset (fixed SQL and %(qN)s parameters) onto these heads.

-- name: query_columns
SELECT s.id, s.data, s.version, s.created_at, s.updated_at, s.payload, s.manifest,
       s.expires_at

-- name: index_exists
SELECT 1 FROM pg_indexes WHERE schemaname = %(schema)s AND indexname = %(name)s

-- name: list_indexes
SELECT c.relname, obj_description(c.oid, 'pg_class')
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %(schema)s AND t.relname = %(table)s
  AND obj_description(c.oid, 'pg_class') LIKE '{{"pgactors_index"%%'

-- name: query_from
FROM {schema}.{state} s
WHERE s.type = %(type)s AND (s.expires_at IS NULL OR s.expires_at > now())

-- Administration: schema installation, verification, status, reset.

-- name: ping
SELECT 1

-- name: server_time
SELECT clock_timestamp()

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
-- Summed over the partitions: a partitioned table itself has no storage.
WITH target AS (
    SELECT to_regclass(quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)) AS rel
),
tree AS (
    SELECT t.relid, t.isleaf, t.level FROM target, pg_partition_tree(target.rel) t
    UNION ALL
    -- An unpartitioned table has no partition tree: it is its own only leaf.
    SELECT target.rel, true, 0 FROM target
    WHERE target.rel IS NOT NULL AND NOT EXISTS (SELECT FROM pg_partition_tree(target.rel))
)
SELECT coalesce(sum(pg_table_size(t.relid)), 0), coalesce(sum(pg_indexes_size(t.relid)), 0)
FROM tree t
WHERE t.isleaf

-- name: state_stats
-- Sizes and vacuum statistics of the state table, over every partition. The row
-- figures are the statistics collector's estimates, as autovacuum sees them.
SELECT count(*) FILTER (WHERE t.level = 1),
       coalesce(sum(pg_table_size(t.relid)) FILTER (WHERE t.isleaf), 0),
       coalesce(sum(pg_total_relation_size(nullif(c.reltoastrelid, 0))) FILTER (WHERE t.isleaf), 0),
       coalesce(sum(pg_indexes_size(t.relid)) FILTER (WHERE t.isleaf), 0),
       coalesce(sum(s.n_live_tup), 0),
       coalesce(sum(s.n_dead_tup), 0),
       max(s.last_autovacuum),
       max(s.last_autoanalyze),
       coalesce(sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del), 0)
FROM (WITH target AS (
          SELECT to_regclass(quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)) AS rel
      )
      SELECT t.relid, t.isleaf, t.level FROM target, pg_partition_tree(target.rel) t
      UNION ALL
      SELECT target.rel, true, 0 FROM target
      WHERE target.rel IS NOT NULL
        AND NOT EXISTS (SELECT FROM pg_partition_tree(target.rel))) t
JOIN pg_class c ON c.oid = t.relid
LEFT JOIN pg_stat_user_tables s ON s.relid = t.relid AND t.isleaf

-- name: activity_stats
-- Listeners are the change feed's connections, which name themselves after the channel.
SELECT count(*) FILTER (WHERE a.backend_type = 'client backend'),
       count(*) FILTER (WHERE a.backend_type = 'client backend' AND a.state = 'active'),
       count(*) FILTER (WHERE a.application_name = %(listener)s),
       pg_notification_queue_usage()
FROM pg_stat_activity a
WHERE a.datname = current_database()

-- name: writes_last_minute
-- Changes numbered in the last minute. Positions are contiguous and numbered with a
-- rising clock, so the recent ones are a suffix: binary-search its start with a few
-- index probes instead of scanning a log that may hold a day of changes.
WITH RECURSIVE feed AS (
    SELECT f.last_position, f.pruned_through, now() - interval '1 minute' AS cutoff
    FROM {schema}.{feed} f
),
search (lo, hi) AS (
    SELECT feed.pruned_through, feed.last_position + 1 FROM feed
    UNION ALL
    SELECT CASE WHEN probe.recent THEN s.lo ELSE (s.lo + s.hi) / 2 END,
           CASE WHEN probe.recent THEN (s.lo + s.hi) / 2 ELSE s.hi END
    FROM search s
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT c.at >= feed.cutoff
                         FROM {schema}.{changes} c, feed
                         WHERE c.position = (s.lo + s.hi) / 2), false) AS recent
    ) probe
    WHERE s.hi - s.lo > 1
)
SELECT feed.last_position + 1 - min(search.hi) FROM search, feed GROUP BY feed.last_position

-- name: type_names
-- Every type present, one index probe each (a loose scan of the primary key), without
-- reading the rows between: fast however many records each type has.
WITH RECURSIVE names (type) AS (
    (SELECT s.type FROM {schema}.{state} s ORDER BY s.type LIMIT 1)
    UNION ALL
    SELECT (SELECT s.type FROM {schema}.{state} s WHERE s.type > n.type ORDER BY s.type LIMIT 1)
    FROM names n
    WHERE n.type IS NOT NULL
)
SELECT type FROM names WHERE type IS NOT NULL

-- name: type_statistics
-- The planner's statistics on the state table's type column: the most common types
-- with their share of the rows, the share of the other types, and how many types.
SELECT s.most_common_vals::text::text[], s.most_common_freqs, s.n_distinct
FROM pg_stats s
WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s AND s.attname = 'type'
ORDER BY s.inherited DESC
LIMIT 1

-- name: feed_position
-- The change log's newest position and time, and the writes waiting to be numbered
-- (counted up to 10,001: a backlog that large is reported as such).
SELECT f.last_position,
       (SELECT c.at FROM {schema}.{changes} c WHERE c.position = f.last_position),
       (SELECT count(*) FROM (SELECT FROM {schema}.{pending_changes} LIMIT 10001) p)
FROM {schema}.{feed} f

-- name: state_partitioning
-- Whether the state table exists, and its hash partition count (NULL: not partitioned).
SELECT CASE WHEN c.relkind = 'p'
            THEN (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')

-- name: create_state_partition
-- A template: {partition}, {modulus} and {remainder} are filled in per partition.
CREATE TABLE {schema}.{partition} PARTITION OF {schema}.{state}
    FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})

-- name: drop_schema
DROP TABLE IF EXISTS {schema}.{state};
DROP TABLE IF EXISTS {schema}.{pending_changes};
DROP TABLE IF EXISTS {schema}.{changes};
DROP TABLE IF EXISTS {schema}.{feed};
DROP TABLE IF EXISTS {schema}.{migrations};
DROP TABLE IF EXISTS {schema}.{calls};
DROP TABLE IF EXISTS {schema}.{reminders};
DROP TABLE IF EXISTS {schema}.{history};
DROP TABLE IF EXISTS {schema}.{history_types};
DROP FUNCTION IF EXISTS {schema}.{history_fn}();
DROP FUNCTION IF EXISTS {schema}.{conflict_fn}(text, text);
DROP FUNCTION IF EXISTS {schema}.{log_fn}();
DROP FUNCTION IF EXISTS {schema}.{import_fn}(text, bigint, integer);
DROP FUNCTION IF EXISTS {schema}.{sequence_fn}(text, integer);
DROP FUNCTION IF EXISTS {schema}.{lease_fn}(jsonb, integer, float8)

-- Change feed (see migrations/0002_change_feed.sql and 0008_lean_changes.sql).

-- name: sequence_changes
SELECT {schema}.{sequence_fn}(%(channel)s, %(max_rows)s)

-- name: feed_listened
-- Whether a change-feed listener of the channel is connected to this database: the
-- listeners name their connections after the channel (see activity_stats).
SELECT EXISTS (SELECT 1 FROM pg_stat_activity a
               WHERE a.datname = current_database() AND a.application_name = %(listener)s)

-- name: feed_state
SELECT last_position, pruned_through FROM {schema}.{feed}

-- name: changes_after
SELECT position, type, id, version, op, at
FROM {schema}.{changes}
WHERE position > %(after)s
  AND (%(types)s::jsonb IS NULL
       OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb)))
ORDER BY position
LIMIT %(limit)s

-- name: prune_changes
-- The log is in position order and positions are numbered with a rising clock, so
-- the expired rows are a prefix: look only at the oldest chunk each time.
WITH oldest AS (
    SELECT c.position, c.at
    FROM {schema}.{changes} c
    ORDER BY c.position
    LIMIT %(chunk)s
),
gone AS (
    DELETE FROM {schema}.{changes} c
    USING oldest o
    WHERE c.position = o.position AND o.at < now() - make_interval(secs => %(retention)s)
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
FETCH FORWARD {chunk} FROM pgactors_export

-- name: export_records
-- The export queries end with their WHERE: postgres/compiler.py appends the query
-- filter (if any) and ORDER BY type, id.
DECLARE pgactors_export NO SCROLL CURSOR FOR
SELECT type, id, data, version, created_at, updated_at, payload, manifest
FROM {schema}.{state} s
WHERE (%(types)s::jsonb IS NULL OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND (expires_at IS NULL OR expires_at > now())

-- name: export_lines
-- The server writes each JSONL line, so the client never decodes and re-encodes data
-- (the format of jsonl.record_line; timestamps in UTC, set by export_utc). As bytea
-- in binary format, a line reaches the client as the bytes it writes, with no Python
-- code run per row.
DECLARE pgactors_export NO SCROLL CURSOR FOR
SELECT convert_to('{{"type":' || to_json(type)::text || ',"id":' || to_json(id)::text
       || ',"version":' || version::text
       || CASE WHEN payload IS NULL THEN ',"data":' || coalesce(data::text, 'null')
               ELSE ',"payload":"' || translate(encode(payload, 'base64'), E'\n', '')
                    || '","manifest":' || to_json(manifest)::text END
       || ',"created_at":' || to_json(created_at)::text
       || ',"updated_at":' || to_json(updated_at)::text || '}}', 'UTF8')
FROM {schema}.{state} s
WHERE (%(types)s::jsonb IS NULL OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND (expires_at IS NULL OR expires_at > now())

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

-- name: import_changes_stage
-- With the change feed on, the import's changes go to this table (see
-- migrations/0011_import_changes.sql), and are numbered together at its end.
CREATE TEMPORARY TABLE IF NOT EXISTS pgactors_import_changes (
    seq     bigint GENERATED ALWAYS AS IDENTITY,
    type    text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    op      text NOT NULL,
    PRIMARY KEY (seq)
) ON COMMIT DROP

-- name: import_changes_on
SELECT set_config('pgactors.changes', 'import', true)

-- name: import_changes_number
SELECT {schema}.{import_fn}(%(channel)s, %(after)s, %(max_rows)s)

-- name: import_copy
COPY pgactors_import (type, id, version, data, payload, manifest, created_at, updated_at)
FROM STDIN (FORMAT binary)

-- name: import_clear
TRUNCATE pgactors_import

-- name: import_conflicts
-- One primary-key probe per staged record (LIMIT 1 keeps the planner from turning this
-- into a join): a merge join would read the state table's whole key index whenever
-- nothing conflicts, once per chunk.
SELECT i.type, i.id
FROM pgactors_import i
CROSS JOIN LATERAL (SELECT FROM {schema}.{state} s
                    WHERE s.type = i.type AND s.id = i.id
                      AND (s.expires_at IS NULL OR s.expires_at > now()) LIMIT 1) s
ORDER BY i.type, i.id
LIMIT 10

-- name: import_insert
INSERT INTO {schema}.{state} AS s
    (type, id, version, data, payload, manifest, created_at, updated_at)
SELECT i.type, i.id, coalesce(i.version, 1), i.data, i.payload, i.manifest,
       coalesce(i.created_at, now()), coalesce(i.updated_at, now())
FROM pgactors_import i
ORDER BY i.type, i.id
ON CONFLICT (type, id) DO UPDATE
    SET version = EXCLUDED.version, data = EXCLUDED.data, payload = EXCLUDED.payload,
        manifest = EXCLUDED.manifest, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, expires_at = NULL, ttl_seconds = NULL
    WHERE s.expires_at <= now()

-- name: import_insert_new
-- on_conflict=fail: conflicts were checked first; a live record that raced in leaves its
-- row out of the count, and the caller aborts the import.
INSERT INTO {schema}.{state} AS s
    (type, id, version, data, payload, manifest, created_at, updated_at)
SELECT i.type, i.id, coalesce(i.version, 1), i.data, i.payload, i.manifest,
       coalesce(i.created_at, now()), coalesce(i.updated_at, now())
FROM pgactors_import i
ORDER BY i.type, i.id
ON CONFLICT (type, id) DO UPDATE
    SET version = EXCLUDED.version, data = EXCLUDED.data, payload = EXCLUDED.payload,
        manifest = EXCLUDED.manifest, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, expires_at = NULL, ttl_seconds = NULL
    WHERE s.expires_at <= now()

-- name: import_overwrite
-- Runs before import_insert, which then adds the records that did not exist (or had
-- expired: an expired record is absent, so the import makes a new one). The line's
-- record replaces the stored one whole: it has no expiry.
UPDATE {schema}.{state} s
SET version = coalesce(i.version, s.version + 1), data = i.data,
    payload = i.payload, manifest = i.manifest,
    created_at = coalesce(i.created_at, s.created_at), updated_at = coalesce(i.updated_at, now()),
    expires_at = NULL, ttl_seconds = NULL
FROM (SELECT * FROM pgactors_import ORDER BY type, id) i
WHERE s.type = i.type AND s.id = i.id AND (s.expires_at IS NULL OR s.expires_at > now())

-- name: set_reminders
-- Set (or replace) reminders in one statement: each due at its time, or that many
-- seconds after now; a period repeats it. When one is due within the horizon, the
-- reminders channel hears which types, so instances sleeping longer wake for it (the
-- notification is delivered at commit).
WITH i AS (
    SELECT i.type, i.id, i.name,
           COALESCE(i.at::timestamptz, now() + i.after::float8 * interval '1 second') AS due_at,
           i.period::float8 AS period
    FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                    jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements_text(%(names)s::jsonb),
                    jsonb_array_elements_text(%(ats)s::jsonb),
                    jsonb_array_elements_text(%(afters)s::jsonb),
                    jsonb_array_elements_text(%(periods)s::jsonb))
         AS i(type, id, name, at, after, period)
    ORDER BY i.type COLLATE "C", i.id COLLATE "C", i.name COLLATE "C"
), saved AS (
    INSERT INTO {schema}.{reminders} AS r (type, id, name, due_at, period)
    SELECT type, id, name, due_at, period FROM i
    ON CONFLICT (type, id, name) DO UPDATE
        SET due_at = EXCLUDED.due_at, period = EXCLUDED.period, created_at = now(),
            leased_until = NULL
    RETURNING r.type, r.id, r.name, r.due_at, r.period
), woken AS (
    SELECT pg_notify(%(channel)s, string_agg(DISTINCT s.type, ' '))
    FROM saved s
    WHERE s.due_at <= now() + %(horizon)s::float8 * interval '1 second'
    HAVING count(*) > 0
)
SELECT s.type, s.id, s.name, s.due_at, s.period, (SELECT count(*) FROM woken) FROM saved s

-- name: cancel_reminder
DELETE FROM {schema}.{reminders}
WHERE type = %(type)s AND id = %(id)s AND name = %(name)s
RETURNING 1

-- name: list_reminders
SELECT type, id, name, due_at, period FROM {schema}.{reminders}
WHERE (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(id)s::text IS NULL OR id = %(id)s)
  AND (%(due_before)s::timestamptz IS NULL OR due_at < %(due_before)s::timestamptz)
ORDER BY due_at, type COLLATE "C", id COLLATE "C", name COLLATE "C"
LIMIT %(limit)s

-- name: due_reminders
-- Due reminders of these types, oldest first (then by key), after a page's last one if
-- given; not locked: each is claimed on its own.
SELECT type, id, name, due_at, period FROM {schema}.{reminders}
WHERE type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND due_at <= now()
  AND (%(after_due)s::timestamptz IS NULL
       OR (due_at, type COLLATE "C", id COLLATE "C", name COLLATE "C")
          > (%(after_due)s::timestamptz, %(after_type)s::text, %(after_id)s::text,
             %(after_name)s::text))
ORDER BY due_at, type COLLATE "C", id COLLATE "C", name COLLATE "C"
LIMIT %(limit)s

-- name: advance_reminders
-- After firings: a one-shot goes; a periodic one moves to its first due time after now
-- (missed periods fire once, not in a burst). Only each reminder as it was fired: one
-- replaced or cancelled since (by the turn, or anyone) stays as it is now.
WITH i AS (
    SELECT i.type, i.id, i.name, i.due_at::timestamptz AS due_at
    FROM ROWS FROM (jsonb_array_elements_text(%(types)s::jsonb),
                    jsonb_array_elements_text(%(ids)s::jsonb),
                    jsonb_array_elements_text(%(names)s::jsonb),
                    jsonb_array_elements_text(%(dues)s::jsonb)) AS i(type, id, name, due_at)
    ORDER BY i.type COLLATE "C", i.id COLLATE "C", i.name COLLATE "C"
), gone AS (
    DELETE FROM {schema}.{reminders} r USING i
    WHERE r.type = i.type AND r.id = i.id AND r.name = i.name
      AND r.due_at = i.due_at AND r.period IS NULL
      AND r.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
      AND r.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
      AND r.name = ANY (ARRAY(SELECT jsonb_array_elements_text(%(names)s::jsonb)))
    RETURNING 1
)
UPDATE {schema}.{reminders} r
SET due_at = r.due_at + r.period * interval '1 second'
             * (floor(extract(epoch FROM now() - r.due_at) / r.period) + 1),
    leased_until = NULL
FROM i
WHERE r.type = i.type AND r.id = i.id AND r.name = i.name
  AND r.due_at = i.due_at AND r.period IS NOT NULL
  AND r.type = ANY (ARRAY(SELECT jsonb_array_elements_text(%(types)s::jsonb)))
  AND r.id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND r.name = ANY (ARRAY(SELECT jsonb_array_elements_text(%(names)s::jsonb)))
RETURNING r.name

-- name: lease_reminders
-- Due reminders of these types that no other instance holds, oldest first, taken for
-- a while: instances share them out instead of all reaching for the same ones (see
-- migrations/0010_lease_function.sql).
SELECT type, id, name, due_at, period
FROM {schema}.{lease_fn}(%(types)s::jsonb, %(limit)s::integer, %(seconds)s::float8)

-- name: retry_reminder
-- A firing whose turn failed: due again after the delay, unless the turn changed it.
UPDATE {schema}.{reminders}
SET due_at = now() + %(delay)s::float8 * interval '1 second', leased_until = NULL
WHERE type = %(type)s AND id = %(id)s AND name = %(name)s AND due_at = %(due_at)s

-- name: next_reminder
-- Seconds until the next reminder of these types is due (negative: overdue), or null.
-- Each type's first one is read from the index: min() over several types would read
-- every reminder of them.
SELECT extract(epoch FROM min(n.due_at) - now())::float8
FROM jsonb_array_elements_text(%(types)s::jsonb) AS t(type)
CROSS JOIN LATERAL (
    SELECT r.due_at FROM {schema}.{reminders} r
    WHERE r.type = t.type
    ORDER BY r.due_at
    LIMIT 1
) n

-- name: reminder_stats
SELECT count(*), count(*) FILTER (WHERE due_at <= now()),
       min(due_at) FILTER (WHERE due_at <= now())
FROM {schema}.{reminders}

-- Version history (migrations/0009_history.sql). Retention applies on read as well:
-- a version beyond its type's limits is never returned, purged yet or not.

-- name: history_lock
-- Serialises enable/disable: each re-creates the trigger from the committed types.
LOCK TABLE {schema}.{history_types} IN SHARE ROW EXCLUSIVE MODE

-- name: history_enable
INSERT INTO {schema}.{history_types} (type, enabled, keep_versions, keep_days)
VALUES (%(type)s, true, %(keep_versions)s, %(keep_days)s)
ON CONFLICT (type) DO UPDATE
    SET enabled = true, keep_versions = EXCLUDED.keep_versions,
        keep_days = EXCLUDED.keep_days, changed_at = now()

-- name: history_disable
UPDATE {schema}.{history_types} SET enabled = false, changed_at = now()
WHERE type = %(type)s AND enabled
RETURNING 1

-- name: history_enabled_types
SELECT type FROM {schema}.{history_types} WHERE enabled ORDER BY type

-- name: history_limited
-- Whether any type has a limit on its history (enabled or not: its rows still age out).
SELECT 1 FROM {schema}.{history_types}
WHERE keep_versions IS NOT NULL OR keep_days IS NOT NULL
LIMIT 1

-- name: history_drop_trigger
DROP TRIGGER IF EXISTS {history_trigger} ON {schema}.{state}

-- name: history_create_trigger
-- A template: {types} is the enabled types, a literal array composed with sql.Literal.
CREATE TRIGGER {history_trigger} AFTER UPDATE OR DELETE ON {schema}.{state}
FOR EACH ROW WHEN (OLD.type = ANY ({types}::text[]))
EXECUTE FUNCTION {schema}.{history_fn}()

-- name: history_versions
-- One record's kept past versions, newest first.
WITH policy AS (
    SELECT keep_versions, keep_days FROM {schema}.{history_types} WHERE type = %(type)s
), ranked AS (
    SELECT h.seq, h.data, h.version, h.created_at, h.updated_at, h.payload, h.manifest,
           h.expires_at, h.replaced_at, h.deleted,
           row_number() OVER (ORDER BY h.seq DESC) AS rank
    FROM {schema}.{history} h
    WHERE h.type = %(type)s AND h.id = %(id)s
)
SELECT r.data, r.version, r.created_at, r.updated_at, r.payload, r.manifest, r.expires_at,
       r.replaced_at, r.deleted
FROM ranked r LEFT JOIN policy p ON true
WHERE (p.keep_versions IS NULL OR r.rank <= p.keep_versions)
  AND (p.keep_days IS NULL OR r.replaced_at > now() - p.keep_days * interval '1 day')
  AND (%(version)s::bigint IS NULL OR r.version = %(version)s::bigint)
ORDER BY r.seq DESC
LIMIT %(limit)s

-- name: history_purge
-- Every past version beyond its type's limits, in one statement.
WITH ranked AS (
    SELECT h.seq, h.replaced_at, p.keep_versions, p.keep_days,
           row_number() OVER (PARTITION BY h.type, h.id ORDER BY h.seq DESC) AS rank
    FROM {schema}.{history} h
    JOIN {schema}.{history_types} p ON p.type = h.type
    WHERE p.keep_versions IS NOT NULL OR p.keep_days IS NOT NULL
)
DELETE FROM {schema}.{history} h
USING ranked r
WHERE h.seq = r.seq
  AND (r.rank > r.keep_versions OR r.replaced_at <= now() - r.keep_days * interval '1 day')

-- name: history_stats
-- Rows and bytes per type (a scan of the history table), with each type's settings.
WITH kept AS (
    SELECT h.type, count(*) AS rows, sum(pg_column_size(h.*)) AS bytes
    FROM {schema}.{history} h GROUP BY h.type
)
SELECT coalesce(p.type, k.type), coalesce(p.enabled, false), p.keep_versions, p.keep_days,
       coalesce(k.rows, 0), coalesce(k.bytes, 0)
FROM {schema}.{history_types} p FULL JOIN kept k ON k.type = p.type
ORDER BY 1

-- name: history_export
-- Every past version (of the types), oldest first, as written.
SELECT type, id, version, data, payload, manifest, created_at, updated_at, expires_at,
       replaced_at, deleted
FROM {schema}.{history}
WHERE %(types)s::jsonb IS NULL OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb))
ORDER BY seq

-- name: history_import
-- Past versions from an export, appended after the rows already kept.
INSERT INTO {schema}.{history}
    (type, id, version, data, payload, manifest, created_at, updated_at, expires_at,
     replaced_at, deleted)
SELECT i.type, i.id, i.version, CASE WHEN i.manifest IS NULL THEN i.data END,
       decode(i.payload, 'base64'), i.manifest, i.created_at, i.updated_at, i.expires_at,
       i.replaced_at, i.deleted
FROM ROWS FROM (jsonb_to_recordset(%(rows)s::jsonb)
                AS (type text, id text, version bigint, data jsonb, payload text,
                    manifest text, created_at timestamptz, updated_at timestamptz,
                    expires_at timestamptz, replaced_at timestamptz, deleted boolean))
     WITH ORDINALITY AS i(type, id, version, data, payload, manifest, created_at,
                          updated_at, expires_at, replaced_at, deleted, ord)
ORDER BY i.ord
