-- return_cancelled: give the units of a confirmed-then-cancelled order back to stock
-- (sold -> available), once per reservation id however often it is called.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] returned set {sku}
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] qty
-- Returns: {"ok", 1} (returned now), {"ok", 0} (had been returned) or {error code, detail}
-- Checks before any write: the SKU exists, not yet returned, sold >= qty.

local sold = redis.call('HGET', KEYS[1], 'sold')
if not sold then
  return {'unknown_sku', ''}
end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return {'ok', 0}
end
local qty = tonumber(ARGV[3])
if tonumber(sold) < qty then
  return {'invalid_state', 'confirmed'}
end

redis.call('HINCRBY', KEYS[1], 'sold', -qty)
redis.call('HINCRBY', KEYS[1], 'available', qty)
local left = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') - qty
if left > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], left)
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('SADD', KEYS[3], ARGV[1])
return {'ok', 1}
