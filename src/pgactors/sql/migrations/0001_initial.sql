-- The state table, its indexes and the batch-conflict helper.
-- Identifiers in braces are composed with psycopg.sql.Identifier by schema.py.
-- payload/manifest (binary codecs) and expires_at (TTL) are reserved for later layers.
-- {partition_by} is empty, or PARTITION BY HASH (id) for `init --partitions N`.

CREATE TABLE IF NOT EXISTS {schema}.{state} (
    type        text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    version     bigint      NOT NULL,
    data        jsonb,
    payload     bytea,
    manifest    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    CONSTRAINT {state_pkey} PRIMARY KEY (type, id),
    CONSTRAINT {state_version_check} CHECK (version > 0),
    CONSTRAINT {state_key_check} CHECK (char_length(type) BETWEEN 1 AND 255
                                        AND char_length(id) BETWEEN 1 AND 255)
){partition_by};

CREATE INDEX IF NOT EXISTS {state_type_updated_idx}
    ON {schema}.{state} (type, updated_at);

CREATE INDEX IF NOT EXISTS {state_expires_idx}
    ON {schema}.{state} (expires_at) WHERE expires_at IS NOT NULL;

-- Aborts a batch statement when a concurrent writer changed a record between the
-- batch's version check and its write; the client reports it as VersionConflict.
CREATE OR REPLACE FUNCTION {schema}.{conflict_fn}(type text, id text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgactors: concurrent change to %/% during a batch', type, id
        USING ERRCODE = 'PA409';
END
$$;
