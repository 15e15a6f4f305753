"""Session records in Redis (Authelia: session.redis), shared by every replica of the portal.

The SessionProvider role (portal/storage/base.py: session records, StoreLifecycle, health and
news of ended sessions): every other record stays in the storage. What lives in Redis, under
`portal:` keys of database `database_index`:

    portal:session:<id>        a hash: one session record; <id> is the SHA-256 of the cookie value
                               (sessions.py), never the value itself; username, created_at and
                               data sealed with session.secret (sealing.py), the username also as
                               its keyed hash `user_tag`; times the scripts need in clear
    portal:sessions-of:<tag>   a set of the user's session ids (the per-user index Authelia lacks),
                               named by the user_tag, pruned of stale ids whenever the user gets a
                               new session
    portal:session-expiry      a sorted set: session id -> expires_at, for purge_sessions
    portal:session-ended       the pub/sub channel saying which session or user was ended

Every record expires in Redis by itself: its TTL runs to its absolute expiration or, unless it is
remembered, to its last activity plus the inactivity of its cookie domain (as SessionStore judges
it, sessions.py `_ended`), plus GRACE; a touch extends it. That is the one place this store reads
the clock: Redis TTLs are relative, the records' times absolute. Each change to several keys is
one Lua script, so it is atomic on the server (a single Redis or a Sentinel master; not Redis
Cluster, where a user's keys would live on several nodes).

The package: client.py builds the client (pool, Sentinel, TLS), scripts.py holds the keys and
the Lua scripts, sealing.py the encryption, store.py the RedisSessionStore, listener.py the
cross-replica invalidation.
"""

from portal.storage.redis.client import check_redis_settings, redis_client
from portal.storage.redis.listener import RESUBSCRIBE_DELAY, Invalidate
from portal.storage.redis.scripts import CHANNEL, EXPIRY, GRACE, PREFIX, RECORD, USER_INDEX
from portal.storage.redis.store import RedisSessionStore

__all__ = [
    "CHANNEL",
    "EXPIRY",
    "GRACE",
    "PREFIX",
    "RECORD",
    "RESUBSCRIBE_DELAY",
    "USER_INDEX",
    "Invalidate",
    "RedisSessionStore",
    "check_redis_settings",
    "redis_client",
]
