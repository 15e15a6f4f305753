"""SqliteStorage: the Storage seam over one SQLite file, plus its schema migrations.

One connection lives on one dedicated worker thread, so the event loop never blocks and calls are
serialised; every write is one `BEGIN IMMEDIATE ... COMMIT` run whole on that thread. Several
portal instances may share the file: SQLite's write lock (WAL mode, busy_timeout) serialises them,
and every check-and-set is a single conditional statement inside such a transaction.

The schema version is `PRAGMA user_version`; migrations are `migrations/NNNN_name.sql`, each
applied in its own transaction together with its version bump.

The package splits along the roles of portal.storage.base:

    core.py                     SqliteCore: the connection, its worker thread, the lifecycle
    connection.py               opening the file (owner-only, WAL), one transaction, error names
    schema.py                   the migrations and the read-only check of an existing file
    identity_verifications.py   IdentityVerificationStore (reset-link records)
    rate_limits.py              RateLimitStore
    outbox.py                   OutboxStore
    sessions.py                 SessionRecordStore
    security_answers.py         SecurityAnswerStore
    one_time_codes.py           OneTimeCodeStore (mailed one-time codes)
    totp.py                     TotpStore and EncryptionKeyStore (secrets encrypted)
    webauthn.py                 WebAuthnCredentialStore (passkeys, sign counters)
    identity_token_keys.py      IdentityTokenKeyStore (generated signing keys, encrypted)
    user_languages.py           UserLanguageStore (the language each user last used)

Each role class subclasses SqliteCore; SqliteStorage is all of them on one connection.
"""

from __future__ import annotations

from portal.storage.sqlite.core import SqliteCore
from portal.storage.sqlite.identity_token_keys import SqliteIdentityTokenKeys
from portal.storage.sqlite.identity_verifications import SqliteIdentityVerifications
from portal.storage.sqlite.one_time_codes import SqliteOneTimeCodes
from portal.storage.sqlite.outbox import SqliteOutbox
from portal.storage.sqlite.rate_limits import SqliteRateLimits
from portal.storage.sqlite.schema import check_database_file, packaged_migrations
from portal.storage.sqlite.security_answers import SqliteSecurityAnswers
from portal.storage.sqlite.sessions import SqliteSessionRecords
from portal.storage.sqlite.totp import SqliteTotp
from portal.storage.sqlite.user_languages import SqliteUserLanguages
from portal.storage.sqlite.webauthn import SqliteWebAuthn

__all__ = ["SqliteStorage", "check_database_file", "packaged_migrations"]


class SqliteStorage(
    SqliteIdentityVerifications,
    SqliteRateLimits,
    SqliteOutbox,
    SqliteSessionRecords,
    SqliteSecurityAnswers,
    SqliteOneTimeCodes,
    SqliteTotp,
    SqliteWebAuthn,
    SqliteIdentityTokenKeys,
    SqliteUserLanguages,
    SqliteCore,
):
    """Keep the portal's durable state in one SQLite file: every role of Storage at once.

    SqliteStorage(path, migrations=None, encryption_key=None): see SqliteCore; nothing is
    opened before startup_check.
    """
