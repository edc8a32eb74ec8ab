-- POST /auth/login as a random seeded user ($BENCH_LOGINS: one email per line; every seeded
-- user's password is $BENCH_PASSWORD, stored as a real Argon2id hash).
local common = require("common")
local bodies
local headers = { ["Content-Type"] = "application/json" }

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  local password = os.getenv("BENCH_PASSWORD")
  bodies = {}
  for _, email in ipairs(common.lines(os.getenv("BENCH_LOGINS"))) do
    bodies[#bodies + 1] = '{"email":"' .. email .. '","password":"' .. password .. '"}'
  end
end

function request()
  return wrk.format("POST", "/auth/login", headers, bodies[math.random(#bodies)])
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
