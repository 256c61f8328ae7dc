-- TTL: the length of a sliding expiry, so that every later save can push expires_at
-- forward again. NULL for records without an expiry or with a fixed one.
-- (0003 is reserved for another change.)

ALTER TABLE {schema}.{state} ADD COLUMN IF NOT EXISTS ttl_seconds double precision;
