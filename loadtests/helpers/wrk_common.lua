-- Shared by the wrk scripts of loadtests/bench (wrk 4.x, LuaJIT): reading token files,
-- counting statuses per thread, and a done() that prints them as one parseable line.

local M = {}

function M.read_lines(path)
  local lines = {}
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  for line in f:lines() do
    if #line > 0 then lines[#lines + 1] = line end
  end
  f:close()
  return lines
end

-- Decodes unpadded base64url (a JWT segment).
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local value = {}
for i = 1, #alphabet do value[alphabet:sub(i, i)] = i - 1 end
function M.b64url_decode(s)
  local out, acc, bits = {}, 0, 0
  for i = 1, #s do
    local v = value[s:sub(i, i)]
    if v then
      acc = acc * 64 + v
      bits = bits + 6
      if bits >= 8 then
        bits = bits - 8
        local byte = math.floor(acc / 2 ^ bits)
        out[#out + 1] = string.char(byte)
        acc = acc - byte * 2 ^ bits
      end
    end
  end
  return table.concat(out)
end

-- Pacing for the "latency at half load" runs (wrk2-style, without wrk2): with RATE (req/s)
-- and CONNS set, each connection waits about CONNS/RATE s between requests (uniform jitter
-- 0.5–1.5×, so the connections do not march in step); the achieved rate is reported.
local rate = tonumber(os.getenv("RATE") or "")
local conns = tonumber(os.getenv("CONNS") or "")
if rate and conns and rate > 0 then
  local interval_ms = conns * 1000 / rate
  function M.delay() return interval_ms * (0.5 + math.random()) end
end

-- setup()/done() plumbing: every thread counts statuses in `counts`.
M.threads = {}
function M.setup(thread)
  thread:set("id", #M.threads)
  table.insert(M.threads, thread)
end

function M.done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(M.threads) do
    local c = t:get("counts")
    for k, v in pairs(c or {}) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = k .. "=" .. v end
  table.sort(parts)
  local secs = summary.duration / 1e6
  io.write(string.format("STATUS %s\n", table.concat(parts, " ")))
  io.write(string.format("RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f created_per_s=%.1f errors=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    (total["201"] or 0) / secs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

return M
