-- The outbox: one row per event enqueued in an application's transaction.
-- A relay deletes a row once the broker has confirmed its event; a row the
-- broker refuses for good stays, with the reason in dead_reason.
CREATE TABLE IF NOT EXISTS {outbox} (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    body        text        NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text,
    dead_reason text
);
