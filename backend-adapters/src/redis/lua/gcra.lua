-- gcra: one rate-limit decision by the generic cell rate algorithm, shared by every replica.
-- KEYS[1] the limit's key (one per rule and key value; holds the theoretical arrival time)
-- ARGV[1] emission interval in microseconds (period / rate)
-- ARGV[2] burst: requests admitted at once from an idle key (>= 1)
-- Returns: {allowed (1|0), remaining, retry_after_us, reset_after_us}
--   remaining: requests still admitted right now; retry_after_us: wait before the next
--   request can pass (0 when allowed); reset_after_us: until the key is idle again.
-- Redis TIME is the one clock, so replicas with skewed clocks agree. The key is written only
-- when the request is admitted: a rejected request costs the caller nothing.
-- A stored time beyond now + interval * burst cannot come from this rule (each admission
-- stores at most that): it was stored under a stricter one before a reload loosened it. Such
-- a key is taken as having one request left under the new rule, so it passes at once and then
-- at the new rate, instead of waiting out the old, longer time. No rule version is kept.

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
if tat > now + interval * burst then
  tat = now + interval * (burst - 1)
end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
local diff = now - allow_at
if diff < 0 then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
-- %.0f: tostring() of a microsecond timestamp would print it in exponent form and lose digits.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor(diff / interval), 0, new_tat - now}
