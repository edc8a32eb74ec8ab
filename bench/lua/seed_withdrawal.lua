-- The original API: POST /loyalty {"uuid", "operation":"w", "comment", "balance":1} by a random
-- seeded user on their own account.
local common = require("common")
local users

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  users = {}
  for _, line in ipairs(common.lines(os.getenv("BENCH_USERS"))) do
    local id, token = line:match("^(%S+) (%S+)$")
    users[#users + 1] = {
      headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json" },
      body = '{"uuid":"' .. id .. '","operation":"w","comment":"bench seed api","balance":1}',
    }
  end
end

function request()
  local u = users[math.random(#users)]
  return wrk.format("POST", "/loyalty", u.headers, u.body)
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
