-- Leasing due reminders, as a function so that it is planned without sorts: each
-- type's due reminders are then read in due order from {reminders_due_idx}, and a
-- lease reads about as many rows as it takes. Left to itself, the planner reads every
-- due reminder and sorts them whenever it believes few are due, as it does for a table
-- not analyzed yet (a new store, or a burst of reminders set within the last minute).
-- The rows taken are updated by address: they are locked, so it cannot change.
CREATE OR REPLACE FUNCTION {schema}.{lease_fn}(types jsonb, taken integer, seconds float8)
RETURNS TABLE (type text, id text, name text, due_at timestamptz, period float8)
LANGUAGE sql VOLATILE
SET enable_sort = off
AS $$
WITH due AS (
    SELECT d.tid
    FROM jsonb_array_elements_text($1) AS t(type)
    CROSS JOIN LATERAL (
        SELECT r.ctid AS tid, r.due_at FROM {schema}.{reminders} r
        WHERE r.type = t.type AND r.due_at <= now()
          AND (r.leased_until IS NULL OR r.leased_until < now())
        ORDER BY r.due_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) d
    ORDER BY d.due_at
    LIMIT $2
)
UPDATE {schema}.{reminders} r
SET leased_until = now() + $3 * interval '1 second'
WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
RETURNING r.type, r.id, r.name, r.due_at, r.period
$$;

-- Room on each page for a new version of every reminder on it, so that a lease (which
-- changes nothing indexed) is a HOT update, with no new index entries: a lease takes a
-- run of reminders set together, so most rows of a page at once. At 70, fewer than
-- half were HOT; at 50, all (tests/test_write_path.py). New pages get the room.
ALTER TABLE {schema}.{reminders} SET (fillfactor = 50);
