-- wrk script: POST /v1/peering/token with a unique PeerName per request, spread over nodes;
-- with PEERPLANE_BENCH_WRITE=register, PUT /v1/catalog/register of a unique node instead;
-- with PEERPLANE_BENCH_POOL=N, new tokens for the existing peerings small-000000..N-1 (each
-- thread cycles through its own share, so requests in flight never name the same peering and
-- the number of peerings stays as it is).
local nodes = {}
for hp in string.gmatch(os.getenv("PEERPLANE_BENCH_NODES") or "", "[^,]+") do
  table.insert(nodes, hp)
end
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  local hp = nodes[((counter - 1) % #nodes) + 1]
  local host, port = string.match(hp, "([^:]+):(%d+)")
  thread.addr = wrk.lookup(host, port)[1]
  thread:set("tid", counter)
end

local n = 0
local write = os.getenv("PEERPLANE_BENCH_WRITE") or "token"
local pool = tonumber(os.getenv("PEERPLANE_BENCH_POOL") or "0")
local json = {["Content-Type"] = "application/json"}
function request()
  n = n + 1
  local id = string.format("bench-%d-%d-%d", tid, n, math.random(1, 1e9))
  if write == "register" then
    local body = string.format('{"Node":"%s","Address":"10.0.0.1",' ..
      '"Service":{"Service":"bench","Port":8080,"Tags":["v1"]}}', id)
    return wrk.format("PUT", "/v1/catalog/register", json, body)
  end
  if pool > 0 then
    local share = math.floor(pool / #nodes)
    id = string.format("small-%06d", (tid - 1) * share + (n % share))
  end
  return wrk.format("POST", "/v1/peering/token", json, string.format('{"PeerName":"%s"}', id))
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
