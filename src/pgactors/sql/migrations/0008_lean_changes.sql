-- A leaner change feed: the log is written once per change, and notified once per pass.
--
-- Writers append (type, id, version, op) rows to a small pending table, through the
-- same statement triggers as before. The sequencer (one at a time: it locks the feed
-- row) moves the pending rows visible to it, that is committed, into the log in one
-- statement: it deletes them from the pending table and inserts them into the log with
-- contiguous positions, in pending (seq) order. Log rows are never updated: the
-- position is the log's primary key from the start. Each pass then sends ONE
-- notification, whose payload names the range it numbered, as a JSON object with
-- "from" and "to" (the first and last positions); listeners read it from the log.
--
-- An existing install keeps its numbered rows (and their positions); its unnumbered
-- rows become pending rows in the same order, once the writes in flight have ended.

CREATE TABLE IF NOT EXISTS {schema}.{pending_changes} (
    seq       bigint GENERATED ALWAYS AS IDENTITY,
    type      text COLLATE "C" NOT NULL,
    id        text COLLATE "C" NOT NULL,
    version   bigint NOT NULL,
    op        text NOT NULL,
    CONSTRAINT {pending_changes_pkey} PRIMARY KEY (seq)
);

-- Writers lock the state table before the log: take them in that order, so that no
-- write is in flight while the log changes shape, and readers of the state go on.
LOCK TABLE {schema}.{state} IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE {schema}.{changes} IN ACCESS EXCLUSIVE MODE;

INSERT INTO {schema}.{pending_changes} (type, id, version, op)
SELECT c.type, c.id, c.version, c.op
FROM {schema}.{changes} c
WHERE c.position IS NULL
ORDER BY c.seq;

DELETE FROM {schema}.{changes} WHERE position IS NULL;

DROP INDEX IF EXISTS {schema}.{changes_pending_idx};
ALTER TABLE {schema}.{changes} DROP CONSTRAINT IF EXISTS {changes_pkey};
ALTER TABLE {schema}.{changes} DROP COLUMN IF EXISTS seq;
UPDATE {schema}.{changes} SET at = now() WHERE at IS NULL;
ALTER TABLE {schema}.{changes}
    ALTER COLUMN position SET NOT NULL,
    ALTER COLUMN at SET NOT NULL,
    ADD CONSTRAINT {changes_pkey} PRIMARY KEY (position);
DROP INDEX IF EXISTS {schema}.{changes_position_idx};

-- A session that set pgactors.changes = off (StoreConfig.changes=False) is not logged.
CREATE OR REPLACE FUNCTION {schema}.{log_fn}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pgactors.changes', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO {schema}.{pending_changes} (type, id, version, op)
        SELECT o.type, o.id, o.version, 'delete' FROM old_rows o ORDER BY o.type, o.id;
    ELSE
        INSERT INTO {schema}.{pending_changes} (type, id, version, op)
        SELECT n.type, n.id, n.version, 'save' FROM new_rows n ORDER BY n.type, n.id;
    END IF;
    RETURN NULL;
END
$$;

-- Moves the committed pending rows into the log, numbered, and notifies `channel` once
-- with the range numbered. Each statement of a plpgsql function takes a fresh
-- snapshot, so the pending rows are read only after the feed row is locked: no two
-- sequencers move the same row, and positions follow the order passes commit in.
CREATE OR REPLACE FUNCTION {schema}.{sequence_fn}(channel text, max_rows integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    numbered bigint;
    stamp timestamptz;
BEGIN
    SELECT f.last_position INTO base FROM {schema}.{feed} f FOR UPDATE;
    -- Stamped once the lock is held, so times rise with positions.
    stamp := clock_timestamp();
    WITH moved AS (
        -- Probed by key: a scan would read every row deleted since the last vacuum.
        DELETE FROM {schema}.{pending_changes} p
        WHERE p.seq = ANY (ARRAY(SELECT q.seq FROM {schema}.{pending_changes} q
                                 ORDER BY q.seq LIMIT max_rows))
        RETURNING p.seq, p.type, p.id, p.version, p.op
    )
    INSERT INTO {schema}.{changes} (position, type, id, version, op, at)
    SELECT base + row_number() OVER (ORDER BY m.seq), m.type, m.id, m.version, m.op, stamp
    FROM moved m;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        UPDATE {schema}.{feed} SET last_position = base + numbered;
        PERFORM pg_notify(channel, json_build_object(
            'from', base + 1, 'to', base + numbered)::text);
    END IF;
    RETURN numbered;
END
$$;
