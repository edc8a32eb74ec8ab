-- GET /loyalty/me as a random seeded user ($BENCH_USERS: "<user id> <access token>" per line).
local common = require("common")
local tokens

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  tokens = common.bearer_headers()
end

function request()
  return wrk.format("GET", "/loyalty/me", tokens[math.random(#tokens)])
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
