-- repair_counters: rebuild a SKU's counters from the authority (SQL) after Redis lost data:
-- sold and each buyer's bought units come from ARGV, held/confirming are recounted from the
-- holds still here, available is what remains of the total. Creates the SKU if missing.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] confirming set {sku}
-- ARGV[1] total stock   ARGV[2] per-buyer limit   ARGV[3] max per order   ARGV[4] sale state
-- ARGV[5] units sold in total   ARGV[6] hold key prefix {sku} (a hold is ARGV[6] .. its id)
-- ARGV[7] returned-marker prefix {sku} (a marker is ARGV[7] .. its id)
-- ARGV[8] retention ms of a final hold and of a returned marker
-- ARGV[9] n, then n pairs of buyer, units sold to that buyer
-- then m, then m reservation ids that have an order in SQL (their holds, if held or
--   confirming here, are finished uncounted: SQL's sold has their units)
-- then c, then c reservation ids of cancelled orders (marked returned)
-- Returns: {"ok", total, available, held, confirming, sold, limit, max, state}
--       or {"stock_below_committed", committed}
-- Checks before any write: the total covers held + confirming + sold.

local per_buyer = {}
local i = 10
for _ = 1, tonumber(ARGV[9]) do
  per_buyer[ARGV[i]] = tonumber(ARGV[i + 1])
  i = i + 2
end
local ordered = {}
local m = tonumber(ARGV[i])
for j = i + 1, i + m do
  ordered[ARGV[j]] = true
end
i = i + m + 1
local cancelled = {}
for j = i + 1, i + tonumber(ARGV[i]) do
  cancelled[#cancelled + 1] = ARGV[j]
end

-- Every held hold is in the expiry index and every confirming one in the confirming set.
-- A hold whose order SQL has is finished instead of counted (after the checks below).
local finish = {}
local function recount(ids, wanted)
  local units = 0
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', ARGV[6] .. id, 'buyer', 'qty', 'state')
    if h[3] == wanted then
      if ordered[id] then
        finish[#finish + 1] = id
      else
        local qty = tonumber(h[2])
        units = units + qty
        per_buyer[h[1]] = (per_buyer[h[1]] or 0) + qty
      end
    end
  end
  return units
end
local held = recount(redis.call('ZRANGE', KEYS[3], 0, -1), 'held')
local confirming = recount(redis.call('SMEMBERS', KEYS[4]), 'confirming')

local committed = held + confirming + tonumber(ARGV[5])
if tonumber(ARGV[1]) < committed then
  return {'stock_below_committed', committed}
end

for _, id in ipairs(finish) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('SREM', KEYS[4], id)
  redis.call('HSET', ARGV[6] .. id, 'state', 'confirmed')
  redis.call('PEXPIRE', ARGV[6] .. id, ARGV[8])
end
for _, id in ipairs(cancelled) do
  redis.call('SET', ARGV[7] .. id, '1', 'PX', ARGV[8])
end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'limit', ARGV[2], 'max', ARGV[3],
  'state', ARGV[4], 'held', held, 'confirming', confirming, 'sold', ARGV[5],
  'available', ARGV[1])
if committed > 0 then
  -- Guarded: Lua would format -0 as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', KEYS[1], 'available', -committed)
end
redis.call('DEL', KEYS[2])
for buyer, units in pairs(per_buyer) do
  redis.call('HSET', KEYS[2], buyer, units)
end
local s = redis.call('HMGET', KEYS[1], 'total', 'available', 'held', 'confirming', 'sold',
  'limit', 'max', 'state')
return {'ok', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]}
