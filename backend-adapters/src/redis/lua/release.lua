-- release: give a held hold back to stock now (-> released, or -> expired if already due).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] hold hash {sku}
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- Checks before any write: the SKU and hold exist, the buyer owns it, it is held.
-- Releasing a released or expired hold succeeds and changes nothing.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

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

local to = 'released'
if tonumber(h[5]) <= now_ms() then
  to = 'expired'
end
give_back_held(KEYS[1], KEYS[2], KEYS[3], ARGV[1], h[1], tonumber(h[2]))
end_hold(KEYS[4], h[6], to, ARGV[3])
return {'ok', ARGV[1], h[1], h[2], to, h[4], h[5]}
