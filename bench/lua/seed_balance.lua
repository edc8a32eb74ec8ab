-- The original API: GET /loyalty/<uuid> by a random seeded user on their own account.
local common = require("common")
local users

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  users = {}
  for _, line in ipairs(common.lines(os.getenv("BENCH_USERS"))) do
    local id, token = line:match("^(%S+) (%S+)$")
    users[#users + 1] = { path = "/loyalty/" .. id,
                          headers = { Authorization = "Bearer " .. token } }
  end
end

function request()
  local u = users[math.random(#users)]
  return wrk.format("GET", u.path, u.headers)
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
