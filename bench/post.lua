-- wrk script: POST the same JSON body (env PEERPLANE_BENCH_BODY) to the URL's path; thread i
-- talks to node i (addresses in env PEERPLANE_BENCH_NODES, "host:port,..."). Used for etcd's
-- POST /v3/kv/range, linearizable or serializable.
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

wrk.method = "POST"
wrk.body = os.getenv("PEERPLANE_BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
