"""PostgresStorage: the Storage seam over one PostgreSQL database, for several replicas.

Every guarantee the role docstrings (portal.storage.base) state holds across every portal
process sharing the database: check-and-set writes are single conditional statements (PostgreSQL
row locks serialise them), the outbox is claimed with FOR UPDATE SKIP LOCKED and a lease,
multi-statement work (a rate-limit hit, a new set of security answers) is one transaction, and
migrations run at start-up under an advisory lock. The driver is asyncpg, with its own pool.

    core.py                     PostgresCore: the pool, the lifecycle, failures named
    connection.py               asyncpg options from storage.postgres (addresses, TLS, schema)
    schema.py                   migrations (migrations/NNNN_name.sql) and the write probe
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
"""

from __future__ import annotations

from portal.storage.postgres.core import PostgresCore
from portal.storage.postgres.identity_token_keys import PostgresIdentityTokenKeys
from portal.storage.postgres.identity_verifications import PostgresIdentityVerifications
from portal.storage.postgres.one_time_codes import PostgresOneTimeCodes
from portal.storage.postgres.outbox import PostgresOutbox
from portal.storage.postgres.rate_limits import PostgresRateLimits
from portal.storage.postgres.schema import packaged_migrations
from portal.storage.postgres.security_answers import PostgresSecurityAnswers
from portal.storage.postgres.sessions import PostgresSessionRecords
from portal.storage.postgres.totp import PostgresTotp
from portal.storage.postgres.user_languages import PostgresUserLanguages
from portal.storage.postgres.webauthn import PostgresWebAuthn

__all__ = ["PostgresStorage", "packaged_migrations"]


class PostgresStorage(
    PostgresIdentityVerifications,
    PostgresRateLimits,
    PostgresOutbox,
    PostgresSessionRecords,
    PostgresSecurityAnswers,
    PostgresOneTimeCodes,
    PostgresTotp,
    PostgresWebAuthn,
    PostgresIdentityTokenKeys,
    PostgresUserLanguages,
    PostgresCore,
):
    """Keep the portal's durable state in one PostgreSQL database: every role of Storage at once.

    PostgresStorage(config, certificates_directory=None, migrations=None, encryption_key=None):
    see PostgresCore;
    nothing connects before startup_check.
    """
