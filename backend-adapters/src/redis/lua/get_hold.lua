-- get_hold: read one hold as it is now (a due held hold reads as expired). Read-only.
-- KEYS[1] hold hash {sku}
-- ARGV[1] reservation id
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {"not_found", ""}

local h = redis.call('HMGET', KEYS[1], 'buyer', 'qty', 'state', 'created', 'expires')
if not h[1] then
  return {'not_found', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = h[3]
if state == 'held' and tonumber(h[5]) <= now then
  state = 'expired'
end
return {'ok', ARGV[1], h[1], h[2], state, h[4], h[5]}
