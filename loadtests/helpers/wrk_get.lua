-- GET the URL given on the wrk command line; optional buyer JWT from env TOKEN_FILE (first line).
package.path = (os.getenv("HELPERS") or ".") .. "/?.lua;" .. package.path
local c = require("wrk_common")
setup = c.setup
done = c.done
delay = c.delay
counts = {}

local token_file = os.getenv("TOKEN_FILE")
if token_file and #token_file > 0 then
  wrk.headers["Authorization"] = "Bearer " .. c.read_lines(token_file)[1]
end

function response(status, headers, body)
  local k = tostring(status)
  counts[k] = (counts[k] or 0) + 1
end
