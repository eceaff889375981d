-- Admin API tokens: only a SHA-256 of each token's secret is stored.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    text PRIMARY KEY,           -- the public part of the token: bl_<token_id>_<secret>
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('support', 'admin', 'superadmin')),
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Secrets the API instances share (the key that signs pagination cursors).
CREATE TABLE IF NOT EXISTS api_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
