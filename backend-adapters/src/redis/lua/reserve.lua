-- reserve: take qty units of one SKU for one buyer, or replay the reservation made earlier
-- under the same (buyer, idempotency key).
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] idempotency record {sku} (string: reservation id)   KEYS[5] new hold hash {sku}
-- KEYS[6] the buyer's hold index {sku} (zset: reservation id -> created ms)
-- ARGV[1] new reservation id   ARGV[2] buyer   ARGV[3] qty   ARGV[4] hold ttl ms
-- ARGV[5] hold key prefix {sku} (an earlier hold is ARGV[5] .. its id)
-- ARGV[6] lifetime of the idempotency record ms (hold ttl + retention)
-- Returns: {"ok", replayed 0|1, id, buyer, qty, state, created_ms, expires_at_ms}
--       or {error code, detail}
-- Checks, in order, before any write: known SKU, idempotency (same qty), sale on,
-- qty <= max per order, per-buyer limit, stock.

local stock = redis.call('HMGET', KEYS[1], 'available', 'limit', 'max', 'state')
if not stock[1] then
  return {'unknown_sku', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local qty = tonumber(ARGV[3])

local prior = redis.call('GET', KEYS[4])
if prior then
  local h = redis.call('HMGET', ARGV[5] .. prior, 'buyer', 'qty', 'state', 'created', 'expires')
  -- A record whose hold is gone (retention ran out first) is stale: reserve afresh below.
  if h[1] then
    if tonumber(h[2]) ~= qty then
      return {'idempotency_mismatch', ''}
    end
    local state = h[3]
    -- A due hold the sweeper has not reached yet reads as expired.
    if state == 'held' and tonumber(h[5]) <= now then
      state = 'expired'
    end
    return {'ok', 1, prior, h[1], h[2], state, h[4], h[5]}
  end
end

if stock[4] ~= 'on_sale' then
  return {'sale_paused', ''}
end
if qty > tonumber(stock[3]) then
  return {'purchase_limit', stock[3]}
end
local bought = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if bought + qty > tonumber(stock[2]) then
  return {'purchase_limit', stock[2]}
end
local available = tonumber(stock[1])
if available == 0 then
  return {'sold_out', ''}
end
if available < qty then
  return {'insufficient_stock', stock[1]}
end

-- All checks passed: from here on only writes.
local expires = now + tonumber(ARGV[4])
redis.call('HINCRBY', KEYS[1], 'available', -qty)
redis.call('HINCRBY', KEYS[1], 'held', qty)
redis.call('HINCRBY', KEYS[2], ARGV[2], qty)
redis.call('HSET', KEYS[5], 'buyer', ARGV[2], 'qty', ARGV[3], 'state', 'held',
  'created', now, 'expires', expires, 'idem', KEYS[4])
redis.call('ZADD', KEYS[3], expires, ARGV[1])
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[6])
-- The index lives as long as its newest hold's record; list_buyer_holds drops entries whose
-- hold is no longer open, so it never holds more than a buyer reserved in that time.
redis.call('ZADD', KEYS[6], now, ARGV[1])
redis.call('PEXPIRE', KEYS[6], ARGV[6])
return {'ok', 0, ARGV[1], ARGV[2], ARGV[3], 'held', now, expires}
