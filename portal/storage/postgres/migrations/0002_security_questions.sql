-- Schema version 2: security questions. One row per question a user set up, with the question's
-- text (so an admin editing the configured list does not break anyone's answers) and an argon2id
-- hash of the normalized answer; never the answer itself.

CREATE TABLE security_answers (
    username    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    question    TEXT NOT NULL,
    answer_hash TEXT NOT NULL,
    set_at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (username, position)
);
