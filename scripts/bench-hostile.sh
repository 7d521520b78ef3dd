#!/usr/bin/env bash
# Slow work must not hold up other accounts: another account's `rule/set` and `cdr/add`
# latency (p50/p99) on a release node, first alone, then while PINGS pings to a trunk that
# never answers are pending (in requests of 50; `[sip] per_account` is raised so that all of
# them are in progress at once). Prints both and their ratio, same run.
#
#   scripts/bench-hostile.sh            # N=400 writes each, PINGS=300
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-400}
PINGS=${PINGS:-300}
cargo build --release -q -p edgerate-node
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
free() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if '$1'=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
http=$(free tcp); sip=$(free udp)
cat >"$work/node.toml" <<EOF
[node]
data_dir = "$work/data"
[http]
listen = "127.0.0.1:$http"
[operator]
key = "bench-operator-key"
[sip]
listen = "127.0.0.1:$sip"
trunk = "127.0.0.1:TRUNK"
per_account = 1024
EOF
python3 - "$work/node.toml" "$http" "$N" "$PINGS" <<'PY' &
import sys, socket, subprocess, time, json, threading, http.client, base64, urllib.parse, os
config, port, n, pings = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes every INVITE, never answers
trunk.bind(("127.0.0.1", 0))
text = open(config).read().replace("TRUNK", str(trunk.getsockname()[1]))
open(config, "w").write(text)
node = subprocess.Popen(["target/release/edgerate", "serve", "--config", config],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1); c.request("GET", "/readyz")
            if c.getresponse().status == 200: break
        except OSError: time.sleep(0.1)
    def call(auth, service, form, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", f"/api/{service}.json", urllib.parse.urlencode(form),
                  {"authorization": auth, "content-type": "application/x-www-form-urlencoded"})
        r = c.getresponse(); body = r.read(); c.close()
        return r.status, body
    op = "Bearer bench-operator-key"
    def account(name):
        _, b = call(op, "admin/account/create", {"name": name, "rps": "1000000"})
        a = json.loads(b)
        return "Basic " + base64.b64encode(f"{a['account']}:{a['key']}".encode()).decode()
    writer, pinger = account("writer"), account("pinger")
    _, b = call(writer, "ratecard/create", {"name": "w"})
    card = json.loads(b)["id"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    def timed(service, form):
        t = time.perf_counter()
        conn.request("POST", f"/api/{service}.json", urllib.parse.urlencode(form),
                     {"authorization": writer, "content-type": "application/x-www-form-urlencoded"})
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
        return (time.perf_counter() - t) * 1000
    def run(tag):
        sets = sorted(timed("ratecard/rule/set", {"card": card, "prefix": f"44{tag}{i}", "rate": "0.01"}) for i in range(n))
        adds = sorted(timed("cdr/add", {"callid": f"{tag}-{i}", "dest_number": "441234", "sip_code": "200"}) for i in range(n))
        q = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))]
        return {"set": (q(sets, .5), q(sets, .99)), "add": (q(adds, .5), q(adds, .99))}
    alone = run(1)
    answers = []
    def ping(r):
        numbers = ",".join(f"4477009{r:02d}{i:02d}" for i in range(50))
        t = time.perf_counter()
        s, _ = call(pinger, "lookup/ping", {"number": numbers, "timeout": "20"}, timeout=60)
        answers.append((s, time.perf_counter() - t))
    threads = [threading.Thread(target=ping, args=(r,)) for r in range(pings // 50)]
    for t in threads: t.start()
    time.sleep(0.5)
    busy = run(2)
    pending = sum(1 for t in threads if t.is_alive())
    for t in threads: t.join()
    print(f"pings: {pings} in {len(threads)} requests; answers {sorted(s for s, _ in answers)}; "
          f"429s in {max((d for s, d in answers if s == 429), default=0)*1000:.0f} ms at most; "
          f"{pending} requests still pending when the writes finished")
    for what in ("set", "add"):
        (a50, a99), (b50, b99) = alone[what], busy[what]
        name = "rule/set" if what == "set" else "cdr/add"
        print(f"{name:9} alone p50 {a50:.2f} ms p99 {a99:.2f} ms | with pings pending p50 {b50:.2f} ms p99 {b99:.2f} ms | ratio p50 {b50/a50:.2f} p99 {b99/a99:.2f}")
finally:
    node.kill()
PY
wait $!
