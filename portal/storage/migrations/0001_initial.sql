-- Schema version 1: reset-link records, rate-limit event log, mail outbox, sessions.
-- Applied inside one transaction together with `PRAGMA user_version = 1`; a migration file must
-- not contain its own BEGIN/COMMIT. Times are REAL seconds since the epoch, given by the caller.

CREATE TABLE identity_verifications (
    jti         TEXT PRIMARY KEY NOT NULL,
    username    TEXT NOT NULL,
    action      TEXT NOT NULL,
    issued_at   REAL NOT NULL,
    issued_ip   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    consumed_at REAL,
    consumed_ip TEXT,
    revoked_at  REAL,
    revoked_ip  TEXT
);
CREATE INDEX identity_verifications_username_action
    ON identity_verifications (username, action);
CREATE INDEX identity_verifications_expires_at
    ON identity_verifications (expires_at);

CREATE TABLE rate_limit_events (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);
CREATE INDEX rate_limit_events_key_at ON rate_limit_events (key, at);
CREATE INDEX rate_limit_events_at ON rate_limit_events (at);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_next_attempt_at ON outbox (next_attempt_at);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    username       TEXT NOT NULL,
    created_at     REAL NOT NULL,
    last_active_at REAL NOT NULL,
    expires_at     REAL NOT NULL,
    remember_me    INTEGER NOT NULL CHECK (remember_me IN (0, 1)),
    data           TEXT NOT NULL
);
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

