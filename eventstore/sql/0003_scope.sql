-- A scope per event: an opaque key the writer chooses (the application sets the company
-- a stream belongs to), so a reader allowed only some scopes reads them through an index
-- instead of scanning the log. The store never interprets it. Adding the column is
-- instant; the index is built once (about a second per million events) and costs one
-- more B-tree insert per appended event.
ALTER TABLE events ADD COLUMN IF NOT EXISTS scope text COLLATE "C";
CREATE INDEX IF NOT EXISTS events_scope_position ON events (scope, position);

-- The one-round-trip append gains the scope of its stream.
DROP FUNCTION IF EXISTS eventstore_append(text, integer, uuid[], text[], jsonb[], jsonb[], bigint);
CREATE OR REPLACE FUNCTION eventstore_append(
    p_stream_id text,
    p_expected integer,
    p_ids uuid[],
    p_types text[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_lock_key bigint,
    p_scope text
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
    INSERT INTO events (position, stream_id, stream_version, event_id, event_type, data,
                        metadata, scope)
    SELECT v_head + n, p_stream_id, v_current + n, i, t, d, m, p_scope
      FROM unnest(p_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS u(i, t, d, m, n);
    RETURN v_head + cardinality(p_ids);
END
$$;
