-- list_buyer_holds: one buyer's open holds of one SKU (held and unexpired, or confirming),
-- oldest first, at most ARGV[2]. Drops index entries whose hold is no longer open.
-- KEYS[1] the buyer's hold index {sku} (zset: reservation id -> created ms)   KEYS[2] stock hash {sku}
-- ARGV[1] hold key prefix {sku}   ARGV[2] most holds to return
-- Returns: {"unknown_sku", ""} or {"ok", then six fields per hold: id, buyer, qty, state, created_ms, expires_at_ms}
-- The index only has ids this buyer reserved within one record lifetime, and the per-buyer
-- limit bounds how many of them are open, so the walk is short.

if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'unknown_sku', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local out = {'ok'}
local found = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HMGET', ARGV[1] .. id, 'buyer', 'qty', 'state', 'created', 'expires')
  local open = h[1] and (h[3] == 'confirming' or (h[3] == 'held' and tonumber(h[5]) > now))
  if not open then
    redis.call('ZREM', KEYS[1], id)
  elseif found < limit then
    found = found + 1
    for _, v in ipairs({id, h[1], h[2], h[3], h[4], h[5]}) do
      out[#out + 1] = v
    end
  end
end
return out
