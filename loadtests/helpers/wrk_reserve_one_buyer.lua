-- wrk: POST /api/v1/reservations of one TEE as one buyer (TOKEN, a buyer JWT), a fresh
-- Idempotency-Key per request. Used by loadtests/cache-ratelimit-bench: after the buyer's
-- first 5 units (TEE's per-buyer limit in the demo catalog) every call is refused by the
-- reserve script with 422 purchase_limit, a full script run that writes nothing, so the
-- load stays the same for the whole run.
local token = assert(os.getenv("TOKEN"), "TOKEN")
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/api/v1/reservations", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("k-%d-%d", math.random(1, 1000000000), n),
  }, '{"sku":"TEE","qty":1}')
end
