-- wrk script: etcd v3 JSON gateway, POST /v3/kv/put with a unique key per request; thread i
-- talks to member i (client addresses in env PEERPLANE_BENCH_NODES, "host:port,...").
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
  thread:set("tid", counter)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 3, 0, -1 do
      local k = math.floor(n / 64 ^ j) % 64
      table.insert(chars, string.sub(alphabet, k + 1, k + 1))
    end
    if not b then chars[3] = "=" end
    if not c then chars[4] = "=" end
    table.insert(out, table.concat(chars))
  end
  return table.concat(out)
end

local value = b64(string.rep("v", 64))
local n = 0
function request()
  n = n + 1
  local key = b64(string.format("bench/%d/%d/%d", tid, n, math.random(1, 1e9)))
  local body = string.format('{"key":"%s","value":"%s"}', key, value)
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
