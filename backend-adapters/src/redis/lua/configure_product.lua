-- configure_product: create a SKU's counters, or update its total stock, limits and sale
-- state. A new total moves `available` by the difference. A counter repair in progress is
-- superseded (its journal dropped: repair_counters refuses): it may have read SQL before the
-- edit and would write the older settings over it.
-- KEYS[1] stock hash {sku}   KEYS[2] repair journal {sku} (begin_repair.lua)
-- ARGV[1] total stock   ARGV[2] per-buyer limit   ARGV[3] max per order
-- ARGV[4] sale state ("on_sale" | "paused")
-- Returns: {"ok", total, available, held, confirming, sold, limit, max, state}
--       or {"stock_below_committed", committed}
-- Checks before any write: the new total covers the units held, confirming and sold.
-- Counters are exact up to 2^53 units (Lua numbers are doubles).

local c = redis.call('HMGET', KEYS[1], 'held', 'confirming', 'sold')
local committed = tonumber(c[1] or '0') + tonumber(c[2] or '0') + tonumber(c[3] or '0')
if tonumber(ARGV[1]) < committed then
  return {'stock_below_committed', committed}
end

redis.call('HSET', KEYS[1], 'total', ARGV[1], 'limit', ARGV[2], 'max', ARGV[3],
  'state', ARGV[4], 'held', c[1] or '0', 'confirming', c[2] or '0', 'sold', c[3] or '0',
  'available', ARGV[1])
-- available = total - committed, done by Redis in 64-bit integers.
if committed > 0 then
  -- Guarded: Lua would format -0 as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', KEYS[1], 'available', -committed)
end
redis.call('DEL', KEYS[2])
local s = redis.call('HMGET', KEYS[1], 'total', 'available', 'held', 'confirming', 'sold',
  'limit', 'max', 'state')
return {'ok', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]}
