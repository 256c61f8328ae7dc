-- Reminders: durable, named wake-ups of an actor, fired by whichever instance runs its
-- class. A one-shot is deleted when it fires; a periodic one moves to its next due time
-- after now (missed periods fire once, not in a burst). Instances claim due reminders
-- with FOR UPDATE SKIP LOCKED, in the transaction that also saves the firing turn.

CREATE TABLE IF NOT EXISTS {schema}.{reminders} (
    type        text             NOT NULL,
    id          text             NOT NULL,
    name        text             NOT NULL,
    due_at      timestamptz      NOT NULL,
    period      double precision CHECK (period > 0),
    created_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT {reminders_pkey} PRIMARY KEY (type, id, name)
);

CREATE INDEX IF NOT EXISTS {reminders_due_idx} ON {schema}.{reminders} (type, due_at);
