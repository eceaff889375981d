-- The admin console's pages (#16), fast with millions of requests.

-- Requests finished per company and hour (UTC), kept by the requests projection: the
-- overview's cost today / 7 / 30 days and its 24-hour chart read at most 720 rows per
-- company instead of every request finished in 30 days (a sum over 250,000 rows took
-- 170 ms at 1,000,000 requests).
CREATE TABLE IF NOT EXISTS request_hours (
    company_id     text        NOT NULL,
    hour           timestamptz NOT NULL,
    completed      bigint      NOT NULL DEFAULT 0,
    failed         bigint      NOT NULL DEFAULT 0,
    cost_micro_usd bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, hour)
);
CREATE INDEX IF NOT EXISTS request_hours_hour_idx ON request_hours (hour);
-- A database upgraded with requests already finished: count them once, here, as the
-- projection's rebuild does (projections/requests.py, count_hours_sql); from now on the
-- projection keeps the table.
INSERT INTO request_hours (company_id, hour, completed, failed, cost_micro_usd)
SELECT company_id, hour, sum(completed), sum(failed), sum(cost) FROM (
    SELECT company_id, date_trunc('hour', completed_at, 'UTC') AS hour,
           1 AS completed, 0 AS failed, cost_micro_usd AS cost
    FROM requests WHERE status = 'PROCESSING_COMPLETE'
    UNION ALL
    SELECT company_id, date_trunc('hour', updated_at, 'UTC'), 0, 1, 0
    FROM requests WHERE status = 'PROCESSING_FAILED'
) t GROUP BY 1, 2
ON CONFLICT (company_id, hour) DO NOTHING;

-- The batches list, newest first, with or without a company: a keyset walk backwards.
CREATE INDEX IF NOT EXISTS batches_seq_idx ON batches (seq);
CREATE INDEX IF NOT EXISTS batches_company_seq_idx ON batches (company_id, seq);

-- The requests page filtered by model: a rare or unknown model otherwise walks the whole
-- (status, seq) index looking for it (2-4 s at 1,000,000 requests; 13 ms with this).
CREATE INDEX IF NOT EXISTS requests_model_status_seq_idx ON requests (model, status, seq);
