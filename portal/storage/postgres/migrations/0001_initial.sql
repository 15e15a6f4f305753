-- Schema version 1: reset-link records, rate-limit event log, mail outbox, sessions.
-- Applied inside one transaction under the migration advisory lock, together with its row in
-- portal_schema_migrations; a migration file must not contain its own BEGIN/COMMIT. Tables are
-- created unqualified: the connection's search_path is storage.postgres.schema. Times are
-- double precision seconds since the epoch, given by the caller.

CREATE TABLE identity_verifications (
    jti         TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    action      TEXT NOT NULL,
    issued_at   DOUBLE PRECISION NOT NULL,
    issued_ip   TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    consumed_at DOUBLE PRECISION,
    consumed_ip TEXT,
    revoked_at  DOUBLE PRECISION,
    revoked_ip  TEXT
);
CREATE INDEX identity_verifications_username_action
    ON identity_verifications (username, action);
CREATE INDEX identity_verifications_expires_at ON identity_verifications (expires_at);

CREATE TABLE rate_limit_events (
    key TEXT NOT NULL,
    at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_limit_events_key_at ON rate_limit_events (key, at);
CREATE INDEX rate_limit_events_at ON rate_limit_events (at);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_next_attempt_at ON outbox (next_attempt_at);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    last_active_at DOUBLE PRECISION NOT NULL,
    expires_at     DOUBLE PRECISION NOT NULL,
    remember_me    BOOLEAN NOT NULL,
    data           TEXT NOT NULL
);
-- The per-user index session_delete_user relies on (a reset ends every session of the user).
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
