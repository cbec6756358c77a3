-- release: give a held hold back to stock now (-> released, or -> expired if already due).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] hold hash {sku}
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- Checks before any write: the SKU and hold exist, the buyer owns it, it is held.
-- Releasing a released or expired hold succeeds and changes nothing.

local h = redis.call('HMGET', KEYS[4], 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
if not h[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found', ''}
end
if h[1] ~= ARGV[2] then
  return {'not_owner', ''}
end
local state = h[3]
if state == 'released' or state == 'expired' then
  return {'ok', ARGV[1], h[1], h[2], state, h[4], h[5]}
end
if state ~= 'held' then
  return {'invalid_state', state}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local to = 'released'
if tonumber(h[5]) <= now then
  to = 'expired'
end
local qty = tonumber(h[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -qty)
redis.call('HINCRBY', KEYS[1], 'available', qty)
-- The buyer's count never goes below 0, and a buyer with nothing left is dropped.
local left = tonumber(redis.call('HGET', KEYS[2], h[1]) or '0') - qty
if left > 0 then
  redis.call('HSET', KEYS[2], h[1], left)
else
  redis.call('HDEL', KEYS[2], h[1])
end
redis.call('HSET', KEYS[4], 'state', to)
-- A final hold and its idempotency record live on for replays, then go.
redis.call('PEXPIRE', KEYS[4], ARGV[3])
if h[6] then
  redis.call('PEXPIRE', h[6], ARGV[3])
end
return {'ok', ARGV[1], h[1], h[2], to, h[4], h[5]}
