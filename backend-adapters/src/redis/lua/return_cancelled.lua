-- return_cancelled: give the units of a confirmed-then-cancelled order back to stock
-- (sold -> available), once per reservation id however often it is called (within the
-- retention: the returned marker lives that long, far beyond any redelivery by the relay).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] returned marker {sku} of the id
-- KEYS[4] confirming set {sku}   KEYS[5] hold hash {sku}
-- KEYS[6] returned set {sku} of releases before 2026-12 (read only: an id in it was returned)
-- KEYS[7] repair journal {sku} (begin_repair.lua)
-- ARGV[1] reservation id   ARGV[2] buyer   ARGV[3] qty   ARGV[4] retention ms of a final hold
-- Returns: {"ok", 1} (returned now), {"ok", 0} (had been returned) or {error code, detail}
-- A cancellation proves its order committed, so a hold still `confirming` (the gateway's
-- finish_confirm has not run yet, or never will) is finished first, exactly as
-- finish_confirm would; otherwise its units would sit in `confirming` and the return would
-- find `sold` short. Checks before any write: the SKU exists, not yet returned, sold (after
-- that finish) >= qty — or, when it is not, a repair in progress to leave the return to.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

local stock = redis.call('HMGET', KEYS[1], 'sold', 'confirming')
if not stock[1] then
  return {'unknown_sku', ''}
end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  return {'ok', 0}
end
local qty = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[5], 'qty', 'state', 'idem')
local finishing = h[2] == 'confirming' and tonumber(h[1]) == qty
  and tonumber(stock[2]) >= qty
local sold = tonumber(stock[1])
if finishing then
  sold = sold + qty
end
if sold < qty then
  if redis.call('EXISTS', KEYS[7]) == 1 then
    -- The store lost data (sold is short) and a repair is rewriting the counters from SQL
    -- right now: leave the return to it (journaled, marked returned), or the repair would
    -- count the cancelled order sold for good.
    redis.call('HSET', KEYS[7], 'r:' .. ARGV[1], ARGV[3] .. ':' .. ARGV[2])
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
    return {'ok', 1}
  end
  return {'invalid_state', 'confirmed'}
end

if finishing then
  redis.call('HINCRBY', KEYS[1], 'confirming', -qty)
  redis.call('SREM', KEYS[4], ARGV[1])
  end_hold(KEYS[5], h[3], 'confirmed', ARGV[4])
else
  redis.call('HINCRBY', KEYS[1], 'sold', -qty)
end
redis.call('HINCRBY', KEYS[1], 'available', qty)
buyer_gives_back(KEYS[2], ARGV[2], qty)
redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[7]) == 1 then
  -- A repair in progress may have read SQL before this cancellation: it must know (and of
  -- the finish, which moved the units too).
  local entry = ARGV[3] .. ':' .. ARGV[2]
  if finishing then
    redis.call('HSET', KEYS[7], 'f:' .. ARGV[1], entry)
  end
  redis.call('HSET', KEYS[7], 'r:' .. ARGV[1], entry)
end
return {'ok', 1}
