-- POST /api/v1/orders for the holds in HOLDS (lines "<buyer index> <reservation token>"),
-- each with its buyer's JWT from TOKENS (line <index>+1). Thread i of T takes every T-th
-- hold; when a thread runs out it starts over (replays answer 200, not counted as created).
package.path = (os.getenv("HELPERS") or ".") .. "/?.lua;" .. package.path
local c = require("wrk_common")
setup = c.setup
done = c.done
delay = c.delay
counts = {}

local tokens = c.read_lines(assert(os.getenv("TOKENS"), "TOKENS"))
local all = c.read_lines(assert(os.getenv("HOLDS"), "HOLDS"))
local threads = tonumber(os.getenv("WRK_THREADS") or "1")
local run = os.getenv("RUN_ID") or tostring(os.time())
local mine = {}
local i = 0

function init(args)
  for j = id + 1, #all, threads do mine[#mine + 1] = all[j] end
end

function request()
  i = i + 1
  local line = mine[((i - 1) % #mine) + 1]
  local index, hold = line:match("^(%d+) (.+)$")
  return wrk.format("POST", "/api/v1/orders", {
    ["Authorization"] = "Bearer " .. tokens[tonumber(index) + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-c-" .. id .. "-" .. i,
  }, '{"reservation_token":"' .. hold .. '"}')
end

function response(status, headers, body)
  local k = tostring(status)
  counts[k] = (counts[k] or 0) + 1
end
