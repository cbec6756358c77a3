-- abort_confirm: undo a begin_confirm whose settlement did not commit: back to held (units to
-- held, original expiry kept) or to released (units back to available).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] confirming set {sku}   KEYS[5] hold hash {sku}
-- ARGV[1] reservation id   ARGV[2] "held" | "released"   ARGV[3] retention ms of a final hold
-- Returns: {"ok", id, buyer, qty, state, created_ms, expires_at_ms} or {error code, detail}
-- Only a confirming hold may be aborted.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

local h = redis.call('HMGET', KEYS[5], 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
if not h[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found', ''}
end
if h[3] ~= 'confirming' then
  return {'invalid_state', h[3]}
end

local qty = tonumber(h[2])
redis.call('HINCRBY', KEYS[1], 'confirming', -qty)
redis.call('SREM', KEYS[4], ARGV[1])
if ARGV[2] == 'held' then
  -- Back under the sweeper's eye with its original expiry (it may already be due).
  redis.call('HINCRBY', KEYS[1], 'held', qty)
  redis.call('ZADD', KEYS[3], h[5], ARGV[1])
  redis.call('HSET', KEYS[5], 'state', 'held')
  return {'ok', ARGV[1], h[1], h[2], 'held', h[4], h[5]}
end
redis.call('HINCRBY', KEYS[1], 'available', qty)
buyer_gives_back(KEYS[2], h[1], qty)
end_hold(KEYS[5], h[6], 'released', ARGV[3])
return {'ok', ARGV[1], h[1], h[2], 'released', h[4], h[5]}
