-- POST /auth/refresh, chaining each session: a refresh token can be spent once, so every 200
-- answer's new refresh_token goes back into this thread's pool and is used later. Each thread
-- owns its own slice of $BENCH_REFRESH (one pre-minted session per line), so no token is ever
-- presented twice (a second use would be reuse and end the session). The pool must stay larger
-- than the thread's connections: a token is out of the pool while its request is in flight.
local common = require("common")
pool = {}
head, tail = 1, 0
local headers = { ["Content-Type"] = "application/json" }
exhausted = 0
lost = 0

function setup(thread) common.setup(thread) end

function init(args)
  local stride = tonumber(os.getenv("BENCH_THREADS") or "1")
  for _, token in ipairs(common.lines(os.getenv("BENCH_REFRESH"), common.thread_index(), stride)) do
    tail = tail + 1
    pool[tail] = token
  end
end

function request()
  if head > tail then
    -- Should not happen with pool > connections; counted and sent as a harmless bad token.
    exhausted = exhausted + 1
    return wrk.format("POST", "/auth/refresh", headers, '{"token":"pool-exhausted"}')
  end
  local token = pool[head]
  pool[head] = nil
  head = head + 1
  return wrk.format("POST", "/auth/refresh", headers, '{"token":"' .. token .. '"}')
end

function response(status, hdrs, body)
  common.count(status)
  local token = body and body:match('"refresh_token":"([^"]+)"')
  if status == 200 and token then
    tail = tail + 1
    pool[tail] = token
  else
    lost = lost + 1
  end
end

-- Tokens still unspent at the end go to $BENCH_REFRESH_OUT, so the next run (the measurement
-- after the warm-up) continues the chains instead of presenting spent tokens.
function done(summary, latency, requests)
  common.done(summary, latency, requests, { "exhausted", "lost" })
  local path = os.getenv("BENCH_REFRESH_OUT")
  if path == nil or path == "" then return end
  local f = assert(io.open(path, "w"))
  for _, thread in ipairs(common.threads()) do
    local p, h, t = thread:get("pool"), thread:get("head"), thread:get("tail")
    for i = h, t do
      if p[i] ~= nil then f:write(p[i], "\n") end
    end
  end
  f:close()
end
