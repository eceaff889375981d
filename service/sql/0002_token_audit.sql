-- Who created and who revoked each token: the CLI (an operator on the host) or the
-- superadmin token that did it over the admin API. Names are never reused, so the
-- actor name recorded on events always points at one token.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS created_by text NOT NULL DEFAULT 'cli';
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS revoked_by text;
