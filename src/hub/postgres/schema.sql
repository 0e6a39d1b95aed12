-- tower-sse's Postgres engine: the tables a hub shares its topics through.
-- Idempotent: safe to run on every start, or once from the app's own migrations.

-- One row per topic: its epoch (a random tag, made anew whenever the row is) and the offset of
-- its newest event. A publish locks the row until its transaction ends, so publishes to one
-- topic take turns and every offset is handed out in commit order.
CREATE TABLE IF NOT EXISTS tower_sse_topics (
    topic   text PRIMARY KEY,
    epoch   text NOT NULL CHECK (epoch ~ '^[A-Za-z0-9]{1,64}$'),
    head    bigint NOT NULL CHECK (head >= 0),
    touched timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS tower_sse_topics_touched ON tower_sse_topics (touched);

-- A topic's history: each event's encoded bytes at its offset. Deleting a topic's row deletes
-- its history.
CREATE TABLE IF NOT EXISTS tower_sse_events (
    topic     text NOT NULL REFERENCES tower_sse_topics (topic) ON DELETE CASCADE,
    epoch     text NOT NULL,
    "offset"  bigint NOT NULL,
    published timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload   bytea NOT NULL,
    PRIMARY KEY (topic, epoch, "offset")
);
