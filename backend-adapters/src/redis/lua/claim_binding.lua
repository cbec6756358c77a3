-- claim_binding: make a (buyer, idempotency key) binding this request's own after its reserve
-- made a hold while the binding held another request's value for the same SKU and quantity.
-- That other request may have been refused and will then delete its value (drop_binding); a
-- binding holding this request's value is never deleted by anyone else.
-- KEYS[1] binding <prefix>:idem:<n>:<buyer>:<key> (string "<sku>|<qty>|<reservation id>";
--         "<sku>|<qty>" when written by an older version)
-- ARGV[1] this request's value "<sku>|<qty>|<reservation id>"   ARGV[2] "<sku>|<qty>"
-- ARGV[3] lifetime of the binding ms (hold ttl + retention)
-- Returns: {"ok"} (the binding holds ARGV[1] now) or {"idempotency_mismatch", value} (the
-- key was bound to another SKU or quantity meanwhile; the binding is left as it is)

local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[2] and string.sub(v, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then
  return {'idempotency_mismatch', v}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {'ok'}
