-- Shared by the bench scenarios (wrk 4.x). Each wrk thread has its own Lua state: init() loads
-- that thread's data; response() counts status codes; done() (main state) sums the threads'
-- counters and writes one JSON object to $BENCH_WRK_OUT.
local M = {}

local threads = {}
local counter = 0

-- Called from the scenario's setup(thread): number the threads so each seeds its own RNG and
-- can take its own slice of a file.
-- With $BENCH_PORTS ("8001,8003"), threads are spread over several processes of the same
-- service (thread i connects to port i mod n): no proxy needed in front of them.
local addrs = nil
function M.setup(thread)
  counter = counter + 1
  thread:set("thread_index", counter)
  local ports = os.getenv("BENCH_PORTS")
  if ports ~= nil and ports ~= "" then
    if addrs == nil then
      addrs = {}
      for port in ports:gmatch("%d+") do
        addrs[#addrs + 1] = wrk.lookup(wrk.host, port)[1]
      end
    end
    thread.addr = addrs[(counter - 1) % #addrs + 1]
  end
  table.insert(threads, thread)
end

function M.threads()
  return threads
end

function M.thread_index()
  return tonumber(wrk.thread:get("thread_index")) or 1
end

function M.seed_random()
  math.randomseed(os.time() * 1000 + M.thread_index() * 7919)
  for _ = 1, 10 do math.random() end
end

-- Request headers for every seeded user ($BENCH_USERS: "<user id> <access token>" per line):
-- Authorization, plus the fields of `extra` (e.g. a content type).
function M.bearer_headers(extra)
  local out = {}
  for _, line in ipairs(M.lines(os.getenv("BENCH_USERS"))) do
    local _, token = line:match("^(%S+) (%S+)$")
    local headers = { Authorization = "Bearer " .. token }
    for name, value in pairs(extra or {}) do headers[name] = value end
    out[#out + 1] = headers
  end
  return out
end

-- Lines of a file; with a stride (thread count), only this thread's slice.
function M.lines(path, index, stride)
  local out = {}
  local i = 0
  for line in io.lines(path) do
    if line ~= "" then
      if stride == nil or (i % stride) == (index - 1) then
        out[#out + 1] = line
      end
      i = i + 1
    end
  end
  return out
end

-- Per-thread status counters (read back by done() through thread:get).
statuses = {}
function M.count(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function M.response(status, headers, body)
  M.count(status)
end

local function encode_statuses(t)
  local parts = {}
  for code, n in pairs(t) do
    parts[#parts + 1] = string.format('"%d":%d', code, n)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function M.done(summary, latency, requests, extra)
  local merged = {}
  local extra_totals = {}
  for _, thread in ipairs(threads) do
    local st = thread:get("statuses")
    if st ~= nil then
      for code, n in pairs(st) do
        merged[code] = (merged[code] or 0) + n
      end
    end
    for _, name in ipairs(extra or {}) do
      extra_totals[name] = (extra_totals[name] or 0) + (tonumber(thread:get(name)) or 0)
    end
  end
  local pcts = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.9}) do
    pcts[#pcts + 1] = string.format('"%s":%d', tostring(p), latency:percentile(p))
  end
  local extras = {}
  for name, n in pairs(extra_totals) do
    extras[#extras + 1] = string.format('"%s":%d', name, n)
  end
  local e = summary.errors
  local json = string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"percentiles":{%s}},' ..
    '"statuses":%s,"extra":{%s}}',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(pcts, ","),
    encode_statuses(merged), table.concat(extras, ","))
  local path = os.getenv("BENCH_WRK_OUT")
  if path ~= nil and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(json)
    f:close()
  else
    io.write(json .. "\n")
  end
end

return M
