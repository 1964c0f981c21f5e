-- The inbox: the ids of the events each consumer has handled, written in the
-- handler's own transaction.
CREATE TABLE IF NOT EXISTS {inbox} (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS {inbox_handled_at_index} ON {inbox} (handled_at);
