-- The bare endpoint of the same server stack: no auth, no database (GET /loyalty/healthz or
-- GET /auth/healthz; the URL given to wrk says which). The ceiling of the HTTP stack itself.
local common = require("common")

function setup(thread) common.setup(thread) end
response = common.response
function done(summary, latency, requests) common.done(summary, latency, requests) end
