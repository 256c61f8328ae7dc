-- Version history, opt-in per type: the versions that saves and deletes replaced.
--
-- {history_types} lists the types whose history is kept (enabled) or was kept
-- (disabled: nothing more is recorded, and what exists stays under the same limits),
-- with their retention: at most keep_versions past versions per record, and only
-- those replaced less than keep_days ago (NULL: no such limit).
--
-- {history} holds the replaced rows. A record deleted and created again starts at
-- version 1 anew, so (type, id, version) is not a key: seq, rising with each row
-- written, is. The row trigger that fills it ({history_trigger}) exists only while
-- some type has history enabled: enable_history and disable_history re-create it
-- with those types written into its WHEN clause, so writes of other types call no
-- function at all.

CREATE TABLE IF NOT EXISTS {schema}.{history_types} (
    type          text COLLATE "C" NOT NULL,
    enabled       boolean          NOT NULL,
    keep_versions integer CHECK (keep_versions > 0),
    keep_days     double precision CHECK (keep_days > 0),
    changed_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT {history_types_pkey} PRIMARY KEY (type)
);

CREATE TABLE IF NOT EXISTS {schema}.{history} (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    type        text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    version     bigint      NOT NULL,
    data        jsonb,
    payload     bytea,
    manifest    text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    -- When the version was replaced, and whether by a delete (or an expiry: a save
    -- over an expired record, or its purge).
    replaced_at timestamptz NOT NULL DEFAULT now(),
    deleted     boolean     NOT NULL,
    CONSTRAINT {history_pkey} PRIMARY KEY (seq)
);

CREATE INDEX IF NOT EXISTS {history_key_idx} ON {schema}.{history} (type, id, seq);

-- One row per replaced version; runs only for the types in the trigger's WHEN clause.
CREATE OR REPLACE FUNCTION {schema}.{history_fn}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.{history}
        (type, id, version, data, payload, manifest, created_at, updated_at, expires_at,
         replaced_at, deleted)
    VALUES (OLD.type, OLD.id, OLD.version, OLD.data, OLD.payload, OLD.manifest,
            OLD.created_at, OLD.updated_at, OLD.expires_at, now(),
            TG_OP = 'DELETE' OR coalesce(OLD.expires_at <= now(), false));
    RETURN NULL;
END
$$;
