-- GET /loyalty/me once with every seeded user's token, in file order, on every process: each
-- wrk thread is bound to one port ($BENCH_PORTS) and walks the whole file, so every loyalty
-- process has verified every token once before the authenticated scenarios are measured (the
-- steady state of clients reusing their tokens). Past the end of the file it starts over.
local common = require("common")
local tokens
local next_index = 0

function setup(thread) common.setup(thread) end

function init(args)
  tokens = common.bearer_headers()
end

function request()
  next_index = next_index % #tokens + 1
  return wrk.format("GET", "/loyalty/me", tokens[next_index])
end

response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
