-- wrk script: thread i talks to node i (addresses in env PEERPLANE_BENCH_NODES, "host:port,...")
local nodes = {}
for hp in string.gmatch(os.getenv("PEERPLANE_BENCH_NODES") or "", "[^,]+") do
  table.insert(nodes, hp)
end
local counter = 0

function setup(thread)
  counter = counter + 1
  local hp = nodes[((counter - 1) % #nodes) + 1]
  local host, port = string.match(hp, "([^:]+):(%d+)")
  thread.addr = wrk.lookup(host, port)[1]
end

local responses = {}
function response(status, headers, body)
  responses[status] = (responses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
