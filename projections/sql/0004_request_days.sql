-- The requests page filtered by days (#16): the seq bounds of whole UTC days, kept by the
-- requests projection as requests are queued (projections/requests.py, _count_days), so
-- a days filter reads a few rows here instead of scanning an index over its whole range
-- (0003's (queued_at, seq): about 2 ms a day at 1,000,000 requests, 144 ms for "failed
-- requests of one company since 59 days ago"). Every request queued on `day` has
-- min_seq <= seq <= max_seq; its queued_at is still tested row by row.
-- The projection's writes wait until this commits: a request projected meanwhile would
-- miss the count below. Requests an older `serve` projects after it are counted when a
-- runner of this version takes the lead (RequestsProjection.resume).
LOCK TABLE requests IN SHARE MODE;
CREATE TABLE IF NOT EXISTS request_days (
    day     date   PRIMARY KEY,
    min_seq bigint NOT NULL,
    max_seq bigint NOT NULL
);
-- A database upgraded with requests already projected: count them once, here, as the
-- projection's rebuild does (count_days_sql); from now on the projection keeps the table.
INSERT INTO request_days (day, min_seq, max_seq)
SELECT (queued_at AT TIME ZONE 'UTC')::date, min(seq), max(seq) FROM requests GROUP BY 1
ON CONFLICT (day) DO UPDATE SET min_seq = LEAST(request_days.min_seq, excluded.min_seq),
    max_seq = GREATEST(request_days.max_seq, excluded.max_seq);
-- 0003's index is not read any more, but it stays: dropping it here would raise this
-- transaction's SHARE lock to ACCESS EXCLUSIVE, which deadlocks with a projection chunk
-- of a `serve` still running (it holds ACCESS SHARE and waits behind our SHARE lock).
