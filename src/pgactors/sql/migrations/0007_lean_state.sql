-- Saves update records in place (HOT updates): nothing a save changes is indexed unless
-- someone asked for it. The GIN index on all data and the (type, updated_at) index made
-- every save rewrite every index entry of its record. Ask for them per type instead:
-- store.create_index(type, "*") for containment on any path of that type, and
-- store.create_index(type, "@updated_at") to order that type by it.
DROP INDEX IF EXISTS {schema}.{state_data_idx};
DROP INDEX IF EXISTS {schema}.{state_type_updated_idx};

-- Room on each page for a record's next version, so an update can stay on its page.
-- Existing pages keep their layout until they are rewritten; new pages get the room.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.oid = '{schema}.{state}'::regclass AND c.relkind = 'r'
        UNION ALL
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent = '{schema}.{state}'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 70)', t);
    END LOOP;
END
$$;
