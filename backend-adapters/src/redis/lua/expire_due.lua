-- expire_due: expire up to `batch` due held holds of one SKU, returning their units to
-- available. One atomic step, so a hold is expired exactly once however many sweepers run:
-- a second sweeper finds it gone from the expiry index.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- ARGV[1] batch (>= 1)   ARGV[2] hold key prefix {sku} (a hold is ARGV[2] .. its id)
-- ARGV[3] retention ms of a final hold
-- Returns: {"ok", then per expired hold: id, buyer, qty, "expired", created_ms, expires_at_ms}
--       or {"unknown_sku", ""}
-- The hold keys are named from ids found in the index; they carry the same {sku} tag, so
-- they live in the script's slot.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown_sku', ''}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms(), 'LIMIT', 0, ARGV[1])

local reply = {'ok'}
local units = 0
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local h = redis.call('HMGET', key, 'buyer', 'qty', 'state', 'created', 'expires', 'idem')
  redis.call('ZREM', KEYS[3], id)
  -- Only a held hold is in the index; anything else is a stale entry, dropped above.
  if h[3] == 'held' then
    local qty = tonumber(h[2])
    units = units + qty
    buyer_gives_back(KEYS[2], h[1], qty)
    end_hold(key, h[6], 'expired', ARGV[3])
    for _, v in ipairs({id, h[1], h[2], 'expired', h[4], h[5]}) do
      reply[#reply + 1] = v
    end
  end
end
if units > 0 then
  redis.call('HINCRBY', KEYS[1], 'held', -units)
  redis.call('HINCRBY', KEYS[1], 'available', units)
end
return reply
