-- Reminders: durable, named wake-ups of an actor, fired by whichever instance runs its
-- class. A one-shot is deleted when it fires; a periodic one moves to its next due time
-- after now (missed periods fire once, not in a burst). Instances lease due reminders
-- (FOR UPDATE SKIP LOCKED, then leased_until) so they share them out; each firing is
-- recorded as a call, so a firing repeated after a lease ran out changes nothing.

CREATE TABLE IF NOT EXISTS {schema}.{reminders} (
    type        text             NOT NULL,
    id          text             NOT NULL,
    name        text             NOT NULL,
    due_at      timestamptz      NOT NULL,
    period      double precision CHECK (period > 0),
    -- Taken by an instance until then (a lease: another instance may take it after).
    leased_until timestamptz,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT {reminders_pkey} PRIMARY KEY (type, id, name)
);

CREATE INDEX IF NOT EXISTS {reminders_due_idx} ON {schema}.{reminders} (type, due_at);
