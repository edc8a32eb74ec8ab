-- GET /loyalty/me as a random seeded user ($BENCH_USERS: "<user id> <access token>" per line).
local common = require("common")
local tokens

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  tokens = {}
  for _, line in ipairs(common.lines(os.getenv("BENCH_USERS"))) do
    local _, token = line:match("^(%S+) (%S+)$")
    tokens[#tokens + 1] = { Authorization = "Bearer " .. token }
  end
end

function request()
  return wrk.format("GET", "/loyalty/me", tokens[math.random(#tokens)])
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
