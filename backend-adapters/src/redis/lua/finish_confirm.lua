-- finish_confirm: the settlement committed; confirming -> confirmed, units confirming -> sold.
-- KEYS[1] stock hash {sku}   KEYS[2] confirming set {sku}   KEYS[3] hold hash {sku}
-- KEYS[4] repair journal {sku} (begin_repair.lua)
-- ARGV[1] reservation id   ARGV[2] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- Idempotent on a confirmed hold; any other state is invalid_state.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

local h = redis.call('HMGET', KEYS[3], 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
if not h[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found', ''}
end
local state = h[3]
if state == 'confirmed' then
  return {'ok', ARGV[1], h[1], h[2], state, h[4], h[5]}
end
if state ~= 'confirming' then
  return {'invalid_state', state}
end

local qty = tonumber(h[2])
redis.call('HINCRBY', KEYS[1], 'confirming', -qty)
redis.call('HINCRBY', KEYS[1], 'sold', qty)
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then
  -- A repair in progress may have read SQL before this order committed: it must know.
  redis.call('HSET', KEYS[4], 'f:' .. ARGV[1], h[2] .. ':' .. h[1])
end
end_hold(KEYS[3], h[6], 'confirmed', ARGV[2])
return {'ok', ARGV[1], h[1], h[2], 'confirmed', h[4], h[5]}
