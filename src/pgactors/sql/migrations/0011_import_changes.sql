-- An import numbers its own changes in bulk, inside its own transaction.
--
-- An import sets pgactors.changes = 'import' for its transaction. The log trigger then
-- appends the import's changes to the import's temporary table,
-- pg_temp.pgactors_import_changes (no WAL, dropped at commit), instead of the shared
-- pending table, which would write each change twice more (its insert and its delete).
-- Just before committing, the import calls {import_fn}. Holding the feed row's lock,
-- it first numbers the pending changes that were committed before (so a record's
-- earlier change keeps the lower position), then appends the import's own changes to
-- the log at the positions after them, and notifies each pass's range once. The lock is held
-- until the import commits, so no other pass numbers anything in between: positions
-- stay contiguous and follow the order in which passes commit.

-- A session that set pgactors.changes = off (StoreConfig.changes=False) is not logged.
CREATE OR REPLACE FUNCTION {schema}.{log_fn}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    mode text := current_setting('pgactors.changes', true);
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    IF mode = 'import' THEN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO pg_temp.pgactors_import_changes (type, id, version, op)
            SELECT o.type, o.id, o.version, 'delete' FROM old_rows o ORDER BY o.type, o.id;
        ELSE
            INSERT INTO pg_temp.pgactors_import_changes (type, id, version, op)
            SELECT n.type, n.id, n.version, 'save' FROM new_rows n ORDER BY n.type, n.id;
        END IF;
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

-- Numbers the import's changes after seq `after`, at most `max_rows` of them (see
-- above), and returns the last seq it numbered: NULL when none was left. The import
-- calls it until then, just before it commits, so that no statement runs longer than
-- a pass (statement_timeout), however large the import.
CREATE OR REPLACE FUNCTION {schema}.{import_fn}(channel text, after bigint, max_rows integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    numbered bigint;
    last_seq bigint;
    stamp timestamptz;
BEGIN
    -- Locks the feed row, which this transaction then holds until it commits.
    PERFORM {schema}.{sequence_fn}(channel, 2147483647);
    SELECT f.last_position INTO base FROM {schema}.{feed} f FOR UPDATE;
    stamp := clock_timestamp();
    WITH taken AS (
        SELECT c.seq, c.type, c.id, c.version, c.op
        FROM pg_temp.pgactors_import_changes c
        WHERE c.seq > after
        ORDER BY c.seq
        LIMIT max_rows
    ), added AS (
        INSERT INTO {schema}.{changes} (position, type, id, version, op, at)
        SELECT base + row_number() OVER (ORDER BY t.seq), t.type, t.id, t.version, t.op, stamp
        FROM taken t
    )
    SELECT count(*), max(t.seq) INTO numbered, last_seq FROM taken t;
    IF numbered > 0 THEN
        UPDATE {schema}.{feed} SET last_position = base + numbered;
        PERFORM pg_notify(channel, json_build_object(
            'from', base + 1, 'to', base + numbered)::text);
    END IF;
    RETURN last_seq;
END
$$;
