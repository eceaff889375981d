-- The JetStream relay's checkpoint (service/entrypoints/relay.py), one row per stream it
-- feeds. `position` is the last event of a contiguous prefix of the log that JetStream
-- acknowledged; `stream_sequence` is the JetStream sequence of that event's message, so
-- a new leader can ask the stream what was stored after it (acknowledged, but not yet
-- checkpointed) and publish none of it twice, even past the duplicate window.
CREATE TABLE IF NOT EXISTS relay_checkpoints (
    stream          text PRIMARY KEY,
    position        bigint NOT NULL DEFAULT 0,
    stream_sequence bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
