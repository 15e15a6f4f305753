"""The Redis session store's keys, timings and Lua scripts (the layout: redis/__init__.py).

Each script changes several keys at once, atomically on the server; KEYS and ARGV are as
store.py passes them. A record's `user_tag` is the keyed hash of its username (sealing.py), the
only form of the username the scripts see; `identity` and `data` are sealed, so the scripts
never read them.
"""

from __future__ import annotations

PREFIX = "portal:"
RECORD = PREFIX + "session:"
USER_INDEX = PREFIX + "sessions-of:"
EXPIRY = PREFIX + "session-expiry"
CHANNEL = PREFIX + "session-ended"
# Seconds a record outlives its end in Redis, so that SessionStore, not the TTL, ends it (and
# says so on the channel) when a request comes right at the end.
GRACE = 5.0
# Records deleted by one purge script at most: a long purge never blocks Redis for long.
PURGE_BATCH = 500

SAVE = """
local id, tag, ttl, index_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user_tag', tag, 'identity', ARGV[5],
  'last_active_at', ARGV[6], 'expires_at', ARGV[7], 'remember_me', ARGV[8], 'data', ARGV[9],
  'idle', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], ARGV[7], id)
redis.call('SADD', KEYS[2], id)
for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HGET', ARGV[11] .. other, 'user_tag') ~= tag then
    redis.call('SREM', KEYS[2], other)
  end
end
if redis.call('PTTL', KEYS[2]) < index_ttl then
  redis.call('PEXPIRE', KEYS[2], index_ttl)
end
return 1
"""

TOUCH = """
local last = redis.call('HGET', KEYS[1], 'last_active_at')
if not last then return 0 end
local at = tonumber(ARGV[1])
if at <= tonumber(last) then return 1 end
redis.call('HSET', KEYS[1], 'last_active_at', ARGV[1])
local deadline = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
local idle = tonumber(redis.call('HGET', KEYS[1], 'idle'))
if redis.call('HGET', KEYS[1], 'remember_me') == '0' and idle > 0 and at + idle < deadline then
  deadline = at + idle
end
local ttl = math.ceil((deadline - tonumber(ARGV[2]) + tonumber(ARGV[3])) * 1000)
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

UPDATE_DATA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return 1
"""

DELETE = """
local tag = redis.call('HGET', KEYS[1], 'user_tag')
if not tag then return 0 end
redis.call('PUBLISH', ARGV[3], 'session:' .. ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', ARGV[2] .. tag, ARGV[1])
return 1
"""

# ARGV[4]: the id of the one session of the user to keep ("" for none); the index keeps it.
DELETE_USER = """
local deleted, kept = 0, false
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'user_tag') == ARGV[1] then
    if id == ARGV[4] then
      kept = true
    else
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], id)
      redis.call('SREM', KEYS[1], id)
      deleted = deleted + 1
    end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
if not kept then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[3], 'user:' .. ARGV[1])
return deleted
"""

PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[4])
local deleted = 0
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local tag = redis.call('HGET', key, 'user_tag')
  if tag then
    redis.call('DEL', key)
    redis.call('SREM', ARGV[3] .. tag, id)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return {deleted, #ids}
"""
