-- Tokens limited to companies (NULL: every company), optional expiry, last use (written
-- at most once a minute), and names unique whatever their case: `Batch-Creator` and
-- `batch-creator` would read as the same actor in an audit trail.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS companies text[];
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_name_folded ON api_tokens (lower(name));
