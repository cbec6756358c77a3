-- lock_acquire: take (or renew) a lease on a named lock and hand out a fencing token.
-- KEYS[1] lock key {name}   KEYS[2] fence counter key {name} (same hash tag: one slot)
-- ARGV[1] owner id (unique per holder)   ARGV[2] lease in ms
-- ARGV[3] floor: the new token must exceed it (the highest token the protected store has
--         seen; lifts the counter after Redis lost it, never lowers it)
-- Returns: the fencing token (integer >= 1), or 0 when another owner holds the lock.
-- A new holder gets INCR of the counter, so every later holder's token is strictly larger.
-- The current owner calling again renews its lease and keeps its token.

local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if owner then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local floor = tonumber(ARGV[3] or '0') or 0
local current = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if current < floor then
  redis.call('SET', KEYS[2], floor)
end
return redis.call('INCR', KEYS[2])
