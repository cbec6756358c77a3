-- POST /api/v1/reservations with a buyer JWT (rotating through TOKENS, one token per line,
-- from `stockgate token --sub-prefix … --count N`) and a fresh Idempotency-Key per request.
-- With HOLDS_OUT set, every created hold is appended to HOLDS_OUT.<thread> as
-- "<buyer index> <reservation token>" (the buyer is read from the token's `sub`, whose
-- number is its index), for the confirm benchmark.
package.path = (os.getenv("HELPERS") or ".") .. "/?.lua;" .. package.path
local c = require("wrk_common")
setup = c.setup
done = c.done
delay = c.delay
counts = {}

local sku = assert(os.getenv("SKU"), "SKU")
local tokens = c.read_lines(assert(os.getenv("TOKENS"), "TOKENS"))
local run = os.getenv("RUN_ID") or tostring(os.time())
local holds_out = os.getenv("HOLDS_OUT")
local out
local n = 0
local body = string.format('{"sku":"%s","qty":1}', sku)

function init(args)
  n = id * 1000003
  if holds_out and #holds_out > 0 then out = assert(io.open(holds_out .. "." .. id, "w")) end
end

function request()
  n = n + 1
  local token = tokens[(n % #tokens) + 1]
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. id .. "-" .. n,
  }, body)
end

function response(status, headers, body)
  local k = tostring(status)
  counts[k] = (counts[k] or 0) + 1
  if out and status == 201 then
    local token = body:match('"token"%s*:%s*"([^"]+)"')
    if token then
      local payload = c.b64url_decode(token:match("^[^.]+%.([^.]+)%.") or "")
      local sub = payload:match('"sub"%s*:%s*"([^"]+)"')
      local index = sub and sub:match("(%d+)$")
      if index then out:write(index, " ", token, "\n"); out:flush() end
    end
  end
end
