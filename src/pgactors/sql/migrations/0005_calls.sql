-- Applied calls: one row per state-changing call made with a call id (the Ray silos'
-- exactly-once calls), written in the same statement as the state it produced, so a
-- retried call can be recognised and answered with its original result. The state's
-- data never holds call ids. Rows older than the retention are purged; applied_at only
-- grows, so a BRIN index finds them at almost no write cost.

CREATE TABLE IF NOT EXISTS {schema}.{calls} (
    type        text        NOT NULL,
    id          text        NOT NULL,
    call_id     text        NOT NULL,
    result      jsonb       NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {calls_pkey} PRIMARY KEY (type, id, call_id)
);

CREATE INDEX IF NOT EXISTS {calls_applied_idx} ON {schema}.{calls} USING brin (applied_at);
