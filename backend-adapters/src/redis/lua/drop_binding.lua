-- drop_binding: delete a (buyer, idempotency key) binding only if it is still the value this
-- request wrote (compare-and-delete), after the request was refused. An equal binding that
-- another request wrote, or one a successful request made its own, is left alone.
-- KEYS[1] binding <prefix>:idem:<n>:<buyer>:<key> (string "<sku>|<qty>|<reservation id>")
-- ARGV[1] the value this request wrote
-- Returns: {"ok", 1} (deleted) or {"ok", 0} (not this request's value, or gone)

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'ok', 1}
end
return {'ok', 0}
