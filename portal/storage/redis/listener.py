"""News of ended sessions across replicas: the `portal:session-ended` pub/sub channel.

session_delete and session_delete_user (scripts.py) publish `session:<id>` or `user:<username>`
on the channel; every replica listens and drops what it cached of those sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from portal.errors import StorageError
from portal.storage.redis.scripts import CHANNEL

log = logging.getLogger("portal.storage.redis")

# Seconds between two attempts to subscribe again after the connection was lost.
RESUBSCRIBE_DELAY = 1.0

# Invalidation callback: ("session", id) | ("user", username) | ("all", "") when messages may
# have been missed (the subscription was lost and is back).
Invalidate = Callable[[str, str], None]


async def listen(client: Callable[[], aioredis.Redis], invalidate: Invalidate) -> None:
    """Pass every ended session or user announced on the channel to `invalidate`, forever.

    `client` returns the store's client (StorageError once it is closed or not started). Sessions
    ended on any replica arrive here within milliseconds. When the subscription is lost, it is
    made again every RESUBSCRIBE_DELAY seconds and then `invalidate("all", "")` is called, since
    messages may have been missed meanwhile. Returns only when cancelled.
    """
    lost = False
    while True:
        try:
            pubsub = client().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if lost:
                    invalidate("all", "")
                    lost = False
                async for message in pubsub.listen():
                    kind, _, key = str(message.get("data", "")).partition(":")
                    if kind in ("session", "user"):
                        invalidate(kind, key)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
        except (RedisError, StorageError, OSError) as exc:
            if not lost:
                log.warning("lost the session-ended subscription: %s", type(exc).__name__)
                invalidate("all", "")
            lost = True
            await asyncio.sleep(RESUBSCRIBE_DELAY)
