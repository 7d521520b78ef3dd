#!/usr/bin/env bash
# Number ping throughput and latency against sipp as the trunk (release build).
#   rate:    TOTAL pings (default 20000), 100 numbers per lookup/ping request from CLIENTS
#            concurrent clients, against sipp answering 180 at once (then CANCEL/200/487/ACK:
#            sip/scenarios/ring-cancel.xml). sipp's exit status says whether every call
#            completed its scenario (no lost transaction).
#   latency: 300 single-number pings, one at a time: request to answer.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${TOTAL:-20000}
CLIENTS=${CLIENTS:-4}
command -v sipp >/dev/null || { apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
cargo build --release -q -p edgerate-node
work=$(mktemp -d)
cleanup() { kill "${node_pid:-}" "${sipp_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, int(sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
http=$(free 1); trunk=$(free 2)
cat >"$work/node.toml" <<TOML
[node]
data_dir = "$work/data"
[http]
listen = "127.0.0.1:$http"
[operator]
key = "bench-operator-key"
[sip]
trunk = "127.0.0.1:$trunk"
per_account = 256
TOML
RUST_LOG=warn target/release/edgerate serve --config "$work/node.toml" >"$work/node.out" 2>&1 &
node_pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.05; done
account=$(curl -sf -H 'Authorization: Bearer bench-operator-key' -d name=bench -d rps=1000000 -d daily=1000000000 \
  "http://127.0.0.1:$http/api/admin/account/create.json")
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["account"])' "$account")
key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$account")
total=$((TOTAL + 300))
(cd "$work" && sipp -sf "$OLDPWD/sip/scenarios/ring-cancel.xml" -i 127.0.0.1 -p "$trunk" -m "$total" \
  -nostdin -timeout 120s -buff_size 4194304 >/dev/null 2>&1; echo $? >"$work/sipp.rc") &
sipp_pid=$!
sleep 0.5
rcvbuf_before=$(awk '/^Udp:/ {n++} /^Udp:/ && n==2 {print $6}' /proc/net/snmp)
python3 - "http://127.0.0.1:$http" "$id" "$key" "$TOTAL" "$CLIENTS" <<'PY'
import base64, http.client, json, statistics, sys, threading, time
url, ident, key, total, clients = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
auth = {"Authorization": "Basic " + base64.b64encode(f"{ident}:{key}".encode()).decode()}
host = url.split("//")[1]
def ping(conn, numbers):
    conn.request("GET", "/api/lookup/ping.json?number=" + ",".join(numbers), headers=auth)
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 200, body
    return [body] if "Short" in body else list(body.values())
lat = []
conn = http.client.HTTPConnection(host, timeout=120)
for i in range(300):
    t0 = time.perf_counter()
    a = ping(conn, [f"4477{i:08d}"])
    lat.append(time.perf_counter() - t0)
    assert a[0]["Short"] == "Live", a
lat.sort()
print(f"latency: one ping, request to answer: p50 {lat[149]*1e3:.2f} ms, p99 {lat[296]*1e3:.2f} ms")
batches = [[f"4478{b:04d}{i:04d}" for i in range(100)] for b in range(total // 100)]
live = [0]
lock = threading.Lock()
def worker(k):
    c = http.client.HTTPConnection(host, timeout=600)
    for batch in batches[k::clients]:
        answers = ping(c, batch)
        with lock:
            live[0] += sum(a["Short"] == "Live" for a in answers)
t0 = time.perf_counter()
threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - t0
print(f"rate: {len(batches) * 100} pings in {elapsed:.2f} s = {len(batches) * 100 / elapsed:.0f} pings/s; {live[0]} answered Live")
PY
wait "$sipp_pid" || true
rcvbuf_after=$(awk '/^Udp:/ {n++} /^Udp:/ && n==2 {print $6}' /proc/net/snmp)
echo "UDP receive-buffer drops on this host during the run: $((rcvbuf_after - rcvbuf_before))"
curl -s "http://127.0.0.1:$http/metrics" | grep -E '^edgerate_sip_(calls|sent)_total' || true
echo "sipp: exit status $(cat "$work/sipp.rc") (0: every call completed its scenario)"
