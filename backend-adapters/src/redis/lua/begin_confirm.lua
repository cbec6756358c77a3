-- begin_confirm: move a held, unexpired hold of this buyer to confirming; from then on the
-- sweeper leaves it alone. A due hold is expired on the spot (units back to available).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] confirming set {sku}   KEYS[5] hold hash {sku}
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- A hold already confirming or confirmed is returned as it is. The hold records when its
-- confirm began (`confirming_since`): the reconciler's grace counts from there.

local h = redis.call('HMGET', KEYS[5], 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
if not h[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found', ''}
end
if h[1] ~= ARGV[2] then
  return {'not_owner', ''}
end
local state = h[3]
if state == 'confirming' or state == 'confirmed' then
  return {'ok', ARGV[1], h[1], h[2], state, h[4], h[5]}
end
if state == 'expired' then
  return {'expired', ''}
end
if state ~= 'held' then
  return {'released', ''}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local qty = tonumber(h[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -qty)
if tonumber(h[5]) <= now then
  -- Due: expire it now, exactly as the sweeper would, and refuse the confirm.
  redis.call('HINCRBY', KEYS[1], 'available', qty)
  local left = tonumber(redis.call('HGET', KEYS[2], h[1]) or '0') - qty
  if left > 0 then
    redis.call('HSET', KEYS[2], h[1], left)
  else
    redis.call('HDEL', KEYS[2], h[1])
  end
  redis.call('HSET', KEYS[5], 'state', 'expired')
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
  if h[6] then
    redis.call('PEXPIRE', h[6], ARGV[3])
  end
  return {'expired', ''}
end
redis.call('HINCRBY', KEYS[1], 'confirming', qty)
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], 'state', 'confirming', 'confirming_since', now)
return {'ok', ARGV[1], h[1], h[2], 'confirming', h[4], h[5]}
