-- expire_due: expire up to `batch` due held holds of one SKU, returning their units to
-- available. One atomic step, so a hold is expired exactly once however many sweepers run:
-- a second sweeper finds it gone from the expiry index.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- ARGV[1] batch (>= 1)   ARGV[2] hold key prefix {sku} (a hold is ARGV[2] .. its id)
-- ARGV[3] retention ms of a final hold
-- Returns: {"ok", then per expired hold: id, buyer, qty, "expired", created_ms, expires_at_ms}
--       or {"unknown_sku", ""}
-- The hold keys are named from ids found in the index; they carry the same {sku} tag, so
-- they live in the script's slot.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown_sku', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, ARGV[1])

local reply = {'ok'}
local units = 0
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local h = redis.call('HMGET', key, 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
  redis.call('ZREM', KEYS[3], id)
  -- Only a held hold is in the index; anything else is a stale entry, dropped above.
  if h[3] == 'held' then
    local qty = tonumber(h[2])
    units = units + qty
    local left = tonumber(redis.call('HGET', KEYS[2], h[1]) or '0') - qty
    if left > 0 then
      redis.call('HSET', KEYS[2], h[1], left)
    else
      redis.call('HDEL', KEYS[2], h[1])
    end
    redis.call('HSET', key, 'state', 'expired')
    redis.call('PEXPIRE', key, ARGV[3])
    if h[6] then
      redis.call('PEXPIRE', h[6], ARGV[3])
    end
    for _, v in ipairs({id, h[1], h[2], 'expired', h[4], h[5]}) do
      reply[#reply + 1] = v
    end
  end
end
if units > 0 then
  redis.call('HINCRBY', KEYS[1], 'held', -units)
  redis.call('HINCRBY', KEYS[1], 'available', units)
end
return reply
