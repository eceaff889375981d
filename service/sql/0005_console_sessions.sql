-- Admin console sessions (service/adapters/sessions.py), shared by every `serve` instance
-- and kept across restarts. The browser holds the session id in its `bl_session` cookie;
-- only a SHA-256 of it is stored, so this table cannot be replayed into a browser. A
-- session lives while it is used within the idle timeout (last_seen_at), until its
-- absolute expiry (expires_at), and only while its token is neither revoked nor expired.
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash      text PRIMARY KEY,
    token_id     text NOT NULL REFERENCES api_tokens (token_id) ON DELETE CASCADE,
    csrf         text NOT NULL,          -- the session's CSRF token, sent back by every form
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_token ON console_sessions (token_id);
CREATE INDEX IF NOT EXISTS console_sessions_expires ON console_sessions (expires_at);
