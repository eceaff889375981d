-- Status tables built only from events (DESIGN §4). Each projection owns its tables and
-- one checkpoint row; rows and checkpoint are written in the same transaction.

CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- projection "requests": one row per request, and counts per company and status
CREATE TABLE IF NOT EXISTS requests (
    request_id         text PRIMARY KEY,
    seq                bigint NOT NULL,      -- position of RequestQueued: the keyset order
    company_id         text NOT NULL,
    session_id         text NOT NULL,
    model              text NOT NULL,
    source             text NOT NULL,
    status             text NOT NULL,
    batch_id           text,
    attempts           integer NOT NULL DEFAULT 0,
    last_error_code    text,
    last_error_message text,
    prompt_tokens      integer NOT NULL DEFAULT 0,
    completion_tokens  integer NOT NULL DEFAULT 0,
    total_tokens       integer NOT NULL DEFAULT 0,
    cost_micro_usd     bigint NOT NULL DEFAULT 0,
    queued_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    completed_at       timestamptz,
    version            integer NOT NULL,
    position           bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_status_seq_idx ON requests (status, seq);
CREATE INDEX IF NOT EXISTS requests_company_status_seq_idx ON requests (company_id, status, seq);
CREATE INDEX IF NOT EXISTS requests_batch_seq_idx ON requests (batch_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS requests_company_session_idx ON requests (company_id, session_id);

CREATE TABLE IF NOT EXISTS request_status_counts (
    company_id text NOT NULL,
    status     text NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (company_id, status)
);

-- projection "session_analyses": the analysis of each completed request
CREATE TABLE IF NOT EXISTS session_analyses (
    request_id   text PRIMARY KEY,
    company_id   text NOT NULL,
    session_id   text NOT NULL,
    language     text NOT NULL,
    sentiment    text NOT NULL,
    escalated    boolean NOT NULL,
    forwarded_hr boolean NOT NULL,
    category     text NOT NULL,
    questions    jsonb NOT NULL,
    summary      text NOT NULL,
    analysed_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS session_analyses_company_idx ON session_analyses (company_id, session_id);

-- projection "batches": one row per batch
CREATE TABLE IF NOT EXISTS batches (
    batch_id          text PRIMARY KEY,
    seq               bigint NOT NULL,
    company_id        text NOT NULL,
    model             text NOT NULL,
    status            text NOT NULL,
    request_count     integer NOT NULL,
    openai_batch_id   text,
    openai_status     text,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    counts_total      integer NOT NULL DEFAULT 0,
    counts_completed  integer NOT NULL DEFAULT 0,
    counts_failed     integer NOT NULL DEFAULT 0,
    completed         integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    missing           integer NOT NULL DEFAULT 0,
    rejected_lines    integer NOT NULL DEFAULT 0,
    last_error        text,
    planned_at        timestamptz NOT NULL,
    submitted_at      timestamptz,
    finished_at       timestamptz,
    processed_at      timestamptz,
    updated_at        timestamptz NOT NULL,
    version           integer NOT NULL,
    position          bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_status_seq_idx ON batches (status, seq);
CREATE INDEX IF NOT EXISTS batches_company_status_idx ON batches (company_id, status);
CREATE UNIQUE INDEX IF NOT EXISTS batches_openai_id_idx ON batches (openai_batch_id);
