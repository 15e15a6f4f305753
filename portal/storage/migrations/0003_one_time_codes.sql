-- One-time codes mailed to elevate a session (Authelia 4.39: one_time_code). One row per code,
-- found by its random public id (the mail's revoke link); the code itself is never stored, only
-- an HMAC-SHA256 of it under a key derived from the portal's secrets.

CREATE TABLE one_time_codes (
    public_id   TEXT PRIMARY KEY NOT NULL,
    username    TEXT NOT NULL,
    intent      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    issued_at   REAL NOT NULL,
    issued_ip   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    consumed_at REAL,
    consumed_ip TEXT,
    revoked_at  REAL,
    revoked_ip  TEXT
);
CREATE INDEX one_time_codes_username_intent ON one_time_codes (username, intent);
CREATE INDEX one_time_codes_expires_at ON one_time_codes (expires_at);
