-- POST /loyalty/me/withdrawals of 1 point as a random seeded user (balances start at 10^6).
local common = require("common")
local headers
local body = '{"amount":1,"comment":"bench withdrawal"}'

function setup(thread) common.setup(thread) end

function init(args)
  common.seed_random()
  headers = common.bearer_headers({ ["Content-Type"] = "application/json" })
end

function request()
  return wrk.format("POST", "/loyalty/me/withdrawals", headers[math.random(#headers)], body)
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
