-- The admin console's overview and batches pages (#16), fast with millions of requests.

-- Cost of completed requests today / 7 / 30 days and completions per hour: an index-only
-- range scan by completion time instead of reading every completed request.
CREATE INDEX IF NOT EXISTS requests_completed_at_idx ON requests (completed_at)
    INCLUDE (company_id, cost_micro_usd) WHERE status = 'PROCESSING_COMPLETE';

-- Failures per hour: a failed request's last change is when it failed.
CREATE INDEX IF NOT EXISTS requests_failed_at_idx ON requests (updated_at)
    INCLUDE (company_id) WHERE status = 'PROCESSING_FAILED';

-- The batches list, newest first, with or without a company: a keyset walk backwards.
CREATE INDEX IF NOT EXISTS batches_seq_idx ON batches (seq);
CREATE INDEX IF NOT EXISTS batches_company_seq_idx ON batches (company_id, seq);

-- The requests page filtered by model: a rare or unknown model otherwise walks the whole
-- (status, seq) index looking for it (2-4 s at 1,000,000 requests; 13 ms with this).
CREATE INDEX IF NOT EXISTS requests_model_status_seq_idx ON requests (model, status, seq);
