-- The requests page filtered by the days requests were queued (#16): the range becomes
-- seq bounds first (projections/request_queries.py, _seq_window), read from this index
-- (index-only), so an old range no longer walks every newer request of the (status,
-- seq) index (1.3-3.6 s at 1,000,000 requests). A database upgraded with requests
-- already projected gets it built here; a rebuild copies it to its shadow table.
CREATE INDEX IF NOT EXISTS requests_queued_at_seq_idx ON requests (queued_at, seq);
