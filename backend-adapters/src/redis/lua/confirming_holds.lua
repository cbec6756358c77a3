-- confirming_holds: the holds of one SKU that are confirming (for the reconciler). Read-only.
-- KEYS[1] stock hash {sku}   KEYS[2] confirming set {sku}
-- ARGV[1] hold key prefix {sku} (a hold is ARGV[1] .. its id)
-- Returns: {"ok", then per hold: id, buyer, qty, "confirming", created_ms, expires_at_ms,
--           confirming_since_ms}
--       or {"unknown_sku", ""}
-- A hold written before holds recorded `confirming_since` answers its creation time.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown_sku', ''}
end
local reply = {'ok'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local h = redis.call('HMGET', ARGV[1] .. id, 'buyer', 'qty', 'state', 'created', 'expires',
    'confirming_since')
  if h[3] == 'confirming' then
    for _, v in ipairs({id, h[1], h[2], h[3], h[4], h[5], h[6] or h[4]}) do
      reply[#reply + 1] = v
    end
  end
end
return reply
