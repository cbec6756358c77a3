-- begin_repair: open the journal of a counter repair of one SKU and list the SKU's confirming
-- holds, in one step: from now until repair_counters, finish_confirm and return_cancelled
-- record in the journal every move of units into or out of `sold`, so the repair can tell
-- which of them the SQL snapshot it reads next already has. Every hold they touch later was
-- either confirming now (listed: the repair asks SQL about it) or began its confirm after now
-- (its order is recent: the repair asks SQL about recent orders). A newer begin_repair
-- replaces the journal (and so supersedes the older repair).
-- KEYS[1] repair journal {sku}   KEYS[2] confirming set {sku}
-- ARGV[1] ticket   ARGV[2] journal lifetime ms
-- Returns: {"ok", id of each confirming hold...}

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ticket', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local out = {'ok'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  out[#out + 1] = id
end
return out
