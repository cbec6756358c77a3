-- undo_reserve: erase a hold that reserve made for a request whose idempotency key turned out
-- to be bound to another SKU or quantity (the binding lives outside the SKU's slot, so the
-- reserve script could not see it). Leaves the SKU as if the hold had never been made.
-- KEYS[1] stock hash {sku}   KEYS[2] buyers hash {sku}   KEYS[3] expiry zset {sku}
-- KEYS[4] idempotency record {sku}   KEYS[5] hold hash {sku}
-- KEYS[6] the buyer's hold index {sku} (the id is removed: a refused reserve lists nothing)
-- ARGV[1] reservation id
-- Returns: {"ok", 1} (erased), {"ok", 0} (no such hold) or {"invalid_state", state}
-- Nobody was told the id, so the hold can only be held, or expired/released by a sweep or
-- another undo; a confirming or confirmed one is left alone.
-- Runs after lib/give_back.lua (scripts.rs puts it in front).

local h = redis.call('HMGET', KEYS[5], 'buyer', 'qty', 'state')
if not h[1] then
  return {'ok', 0}
end
if h[3] == 'confirming' or h[3] == 'confirmed' then
  return {'invalid_state', h[3]}
end

if h[3] == 'held' then
  give_back_held(KEYS[1], KEYS[2], KEYS[3], ARGV[1], h[1], tonumber(h[2]))
end
if redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('DEL', KEYS[4])
end
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[5])
return {'ok', 1}
