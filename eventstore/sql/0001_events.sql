-- The event log. position is assigned by the appender while it holds the writer
-- lock (see append), so positions are gap-free and commit in ascending order.
CREATE TABLE IF NOT EXISTS events (
    position       bigint      PRIMARY KEY,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Deliberately no index on type or category: each index costs as much per appended
-- event as the row itself (docs/architecture.md), and filtered reads walk the
-- position index, which subscriptions bound by advancing to the head.

-- One-round-trip append of events to one stream, used for small appends.
-- Subscribers are woken by a NOTIFY the store sends after commit, not from here:
-- a NOTIFY inside the transaction doubled its time under the writer lock.
-- Raises SQLSTATE 'BL409' on a version conflict; the caller maps it to a typed error.
CREATE OR REPLACE FUNCTION eventstore_append(
    p_stream_id text,
    p_expected integer,
    p_ids uuid[],
    p_types text[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_lock_key bigint
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_current integer;
    v_head bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT coalesce(max(stream_version), 0) INTO v_current
      FROM events WHERE stream_id = p_stream_id;
    IF p_expected IS NOT NULL AND p_expected <> v_current THEN
        RAISE EXCEPTION USING ERRCODE = 'BL409',
            MESSAGE = format('%s|%s|%s', p_stream_id, p_expected, v_current);
    END IF;
    SELECT coalesce(max(position), 0) INTO v_head FROM events;
    INSERT INTO events (position, stream_id, stream_version, event_id, event_type, data, metadata)
    SELECT v_head + n, p_stream_id, v_current + n, i, t, d, m
      FROM unnest(p_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS u(i, t, d, m, n);
    RETURN v_head + cardinality(p_ids);
END
$$;
