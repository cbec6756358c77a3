-- repair_counters: rebuild a SKU's counters from the authority (SQL) after Redis lost data:
-- sold and each buyer's bought units come from ARGV, held/confirming are recounted from the
-- holds still here, available is what remains of the total. Creates the SKU if missing.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] confirming set {sku}   KEYS[5] repair journal {sku} (begin_repair.lua)
-- ARGV[1] total stock   ARGV[2] per-buyer limit   ARGV[3] max per order   ARGV[4] sale state
-- ARGV[5] units sold in total   ARGV[6] hold key prefix {sku} (a hold is ARGV[6] .. its id)
-- ARGV[7] returned-marker prefix {sku} (a marker is ARGV[7] .. its id)
-- ARGV[8] retention ms of a final hold and of a returned marker
-- ARGV[9] the ticket begin_repair gave
-- ARGV[10] n, then n pairs of buyer, units sold to that buyer
-- then m, then m reservation ids that have an order in the SQL snapshot, live or cancelled
--   (their holds, if held or confirming here, are finished uncounted: SQL's sold has their
--   units, or they were cancelled)
-- then c, then c reservation ids of cancelled orders (marked returned)
-- Returns: {"ok", total, available, held, confirming, sold, limit, max, state}
--       or {"stock_below_committed", committed} or {"repair_superseded", ""}
-- Checks before any write: the journal is this repair's, the total covers held + confirming
-- + sold.
--
-- The journal: SQL was read after begin_repair and before this script, and meanwhile
-- gateways finished confirms and the relay returned cancellations, which moved units into and
-- out of the `sold` this script overwrites. For each reservation they touched (f: finished,
-- r: returned; "qty:buyer"):
--   f, no order in the snapshot, not returned: the order committed after the snapshot and its
--     units are sold now, and no later finish will add them: + qty;
--   r, not cancelled in the snapshot: the cancellation came after it, so the snapshot counted
--     the order live — unless the order itself came after the snapshot (f and no order in
--     it), when neither counted: - qty;
--   anything else the snapshot already has (the order, or the cancellation): nothing.
-- "No order in the snapshot" is exact for a journaled finish: its hold was confirming at
-- begin_repair (listed, so asked) or began confirming after it (its order is recent, asked).
-- Without the journal, a finish in that window left sold one short (and the unit on sale
-- twice), a return left it one over (the unit off sale for good). The one case it cannot tell
-- apart: an order committed after the snapshot whose hold this store had lost (no finish)
-- and that is cancelled and returned before this script; it is counted as an order the
-- snapshot had, leaving sold one short, which SQL's stock check refuses to oversell.

if redis.call('HGET', KEYS[5], 'ticket') ~= ARGV[9] then
  return {'repair_superseded', ''}
end
local per_buyer = {}
local i = 11
for _ = 1, tonumber(ARGV[10]) do
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
local was_cancelled = {}
for j = i + 1, i + tonumber(ARGV[i]) do
  cancelled[#cancelled + 1] = ARGV[j]
  was_cancelled[ARGV[j]] = true
end

local sold = tonumber(ARGV[5])
local finished, returned = {}, {}
local journal = redis.call('HGETALL', KEYS[5])
for j = 1, #journal, 2 do
  local kind, id = string.sub(journal[j], 1, 1), string.sub(journal[j], 3)
  local qty, buyer = string.match(journal[j + 1], '^(%d+):(.*)$')
  if kind == 'f' then
    finished[id] = {tonumber(qty), buyer}
  elseif kind == 'r' then
    returned[id] = {tonumber(qty), buyer}
  end
end
local function adjust(entry, sign)
  sold = sold + sign * entry[1]
  per_buyer[entry[2]] = (per_buyer[entry[2]] or 0) + sign * entry[1]
end
for id, entry in pairs(finished) do
  if not ordered[id] and not returned[id] then
    adjust(entry, 1)
  end
end
for id, entry in pairs(returned) do
  local ordered_after = finished[id] and not ordered[id]
  if not was_cancelled[id] and not ordered_after then
    adjust(entry, -1)
  end
end
if sold < 0 then
  sold = 0
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

local committed = held + confirming + sold
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
  'state', ARGV[4], 'held', held, 'confirming', confirming, 'sold', sold,
  'available', ARGV[1])
if committed > 0 then
  -- Guarded: Lua would format -0 as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', KEYS[1], 'available', -committed)
end
redis.call('DEL', KEYS[2])
for buyer, units in pairs(per_buyer) do
  if units > 0 then
    redis.call('HSET', KEYS[2], buyer, units)
  end
end
redis.call('DEL', KEYS[5])
local s = redis.call('HMGET', KEYS[1], 'total', 'available', 'held', 'confirming', 'sold',
  'limit', 'max', 'state')
return {'ok', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]}
