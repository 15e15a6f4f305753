-- Schema version 7: the language each user last used on the portal's pages (sign-in, reset
-- step 1, password change), so mails speak it. One row per username; `language` is one of the
-- portal's language codes (portal/i18n.py LANGUAGES).

CREATE TABLE user_languages (
    username   TEXT PRIMARY KEY,
    language   TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
