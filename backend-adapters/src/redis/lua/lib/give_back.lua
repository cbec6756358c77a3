-- lib/give_back: how a hold's units go back to stock and how a hold ends, written once for
-- every script that does either. scripts.rs puts this file in front of such a script at build
-- time (an EVAL script cannot `require`), so it defines only local functions (a script may not
-- create globals) and touches only the keys its caller passes, all under the caller's {sku}.

-- Redis TIME in ms: the one clock of every script.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The buyer's count in the buyers hash drops by qty. It never goes below 0, and a buyer with
-- nothing left is dropped.
local function buyer_gives_back(buyers, buyer, qty)
  local left = tonumber(redis.call('HGET', buyers, buyer) or '0') - qty
  if left > 0 then
    redis.call('HSET', buyers, buyer, left)
  else
    redis.call('HDEL', buyers, buyer)
  end
end

-- A held hold's qty units back to available: out of the expiry index, held -> available, off
-- the buyer's count. The hold's own state is the caller's to set.
local function give_back_held(stock, buyers, expiry, id, buyer, qty)
  redis.call('ZREM', expiry, id)
  redis.call('HINCRBY', stock, 'held', -qty)
  redis.call('HINCRBY', stock, 'available', qty)
  buyer_gives_back(buyers, buyer, qty)
end

-- A hold reaches a final state: it and its idempotency record (idem, the key its `idem` field
-- names; nil when it has none) live on for replays for the retention ms, then go.
local function end_hold(hold, idem, state, retention)
  redis.call('HSET', hold, 'state', state)
  redis.call('PEXPIRE', hold, retention)
  if idem then
    redis.call('PEXPIRE', idem, retention)
  end
end

