-- Containment index for store.query: an equality filter on a data path also tests
-- containment (data @> ...), which this index answers without reading every record.
-- jsonb_path_ops: smaller and faster than the default opclass; it serves @> only.

CREATE INDEX IF NOT EXISTS {state_data_idx}
    ON {schema}.{state} USING gin (data jsonb_path_ops);
