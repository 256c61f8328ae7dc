-- The change feed: a durable log of every committed change, in commit order.
--
-- Writers only append (type, id, version, op) rows through statement triggers. A row
-- gets its position later, from the sequencer function, once its transaction has
-- committed and so become visible: sequencers run one at a time (they lock the feed
-- row), number the newly visible rows in log order and notify listeners. Positions
-- are therefore contiguous and follow commit order, which sequence values taken
-- inside transactions do not (a transaction holding a lower number can commit after
-- one holding a higher number).

CREATE TABLE IF NOT EXISTS {schema}.{changes} (
    seq       bigint GENERATED ALWAYS AS IDENTITY,
    position  bigint,
    type      text COLLATE "C" NOT NULL,
    id        text COLLATE "C" NOT NULL,
    version   bigint NOT NULL,
    op        text NOT NULL,
    at        timestamptz,
    CONSTRAINT {changes_pkey} PRIMARY KEY (seq),
    CONSTRAINT {changes_op_check} CHECK (op IN ('save', 'delete'))
);

CREATE UNIQUE INDEX IF NOT EXISTS {changes_position_idx}
    ON {schema}.{changes} (position) WHERE position IS NOT NULL;

CREATE INDEX IF NOT EXISTS {changes_pending_idx}
    ON {schema}.{changes} (seq) WHERE position IS NULL;

CREATE TABLE IF NOT EXISTS {schema}.{feed} (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_position   bigint NOT NULL DEFAULT 0,
    pruned_through  bigint NOT NULL DEFAULT 0
);

INSERT INTO {schema}.{feed} DEFAULT VALUES ON CONFLICT DO NOTHING;

-- A session that set pgactors.changes = off (StoreConfig.changes=False) is not logged.
CREATE OR REPLACE FUNCTION {schema}.{log_fn}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pgactors.changes', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO {schema}.{changes} (type, id, version, op)
        SELECT o.type, o.id, o.version, 'delete' FROM old_rows o ORDER BY o.type, o.id;
    ELSE
        INSERT INTO {schema}.{changes} (type, id, version, op)
        SELECT n.type, n.id, n.version, 'save' FROM new_rows n ORDER BY n.type, n.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER {log_insert_trigger}
    AFTER INSERT ON {schema}.{state}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{log_fn}();

CREATE OR REPLACE TRIGGER {log_update_trigger}
    AFTER UPDATE ON {schema}.{state}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{log_fn}();

CREATE OR REPLACE TRIGGER {log_delete_trigger}
    AFTER DELETE ON {schema}.{state}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{log_fn}();

-- Numbers the committed, not yet numbered log rows and notifies `channel` of each.
-- Each statement of a plpgsql function takes a fresh snapshot, so the pending rows are
-- read only after the feed row is locked: no two sequencers number the same row.
CREATE OR REPLACE FUNCTION {schema}.{sequence_fn}(channel text, max_rows integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    numbered bigint;
BEGIN
    SELECT f.last_position INTO base FROM {schema}.{feed} f FOR UPDATE;
    WITH pending AS (
        SELECT c.seq, row_number() OVER (ORDER BY c.seq) AS rn
        FROM {schema}.{changes} c
        WHERE c.position IS NULL
        ORDER BY c.seq
        LIMIT max_rows
    ),
    stamped AS (
        UPDATE {schema}.{changes} c
        SET position = base + p.rn, at = clock_timestamp()
        FROM pending p
        WHERE c.seq = p.seq
        RETURNING c.position, c.type, c.id, c.version, c.op, c.at
    )
    SELECT count(pg_notify(channel, json_build_object(
               'type', s.type, 'id', s.id, 'version', s.version, 'op', s.op,
               'position', s.position, 'at', s.at)::text))
    INTO numbered
    FROM (SELECT * FROM stamped ORDER BY position) s;
    IF numbered > 0 THEN
        UPDATE {schema}.{feed} SET last_position = base + numbered;
    END IF;
    RETURN numbered;
END
$$;
