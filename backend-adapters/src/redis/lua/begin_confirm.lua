-- begin_confirm: move a held, unexpired hold of this buyer to confirming; from then on the
-- sweeper leaves it alone. A due hold is expired on the spot (units back to available).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] confirming set {sku}   KEYS[5] hold hash {sku}
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- A hold already confirming or confirmed is returned as it is. The hold records when its
-- confirm began (`confirming_since`): the reconciler's grace counts from there.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

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

local now = now_ms()
local qty = tonumber(h[2])
if tonumber(h[5]) <= now then
  -- Due: expire it now, exactly as the sweeper would, and refuse the confirm.
  give_back_held(KEYS[1], KEYS[2], KEYS[3], ARGV[1], h[1], qty)
  end_hold(KEYS[5], h[6], 'expired', ARGV[3])
  return {'expired', ''}
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -qty)
redis.call('HINCRBY', KEYS[1], 'confirming', qty)
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], 'state', 'confirming', 'confirming_since', now)
return {'ok', ARGV[1], h[1], h[2], 'confirming', h[4], h[5]}
