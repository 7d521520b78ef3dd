#!/usr/bin/env bash
# Restart time against edit history: a release node with a ROWS-rule card (default 1M) takes
# EDITS rule edits (default 0, 10000 and 100000, each run on a fresh node), waits for the
# background compaction, is SIGKILLed and restarted; prints the seconds from start to the big
# card answering, and the data dir's size and the RSS after the restart, against the same card
# freshly imported (0 edits).
#
#   scripts/bench-restart.sh                  # ROWS=1000000 EDITS="0 10000 100000"
#   ROWS=100000 EDITS="0 10000" scripts/bench-restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
EDITS=${EDITS:-0 10000 100000}
cargo build --release -q -p edgerate-node
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/deck.py "$ROWS" >"$work/deck.csv"
printf '%-8s %10s %12s %12s\n' edits restart_s disk_MiB rss_MiB
for edits in $EDITS; do
  python3 - "$work" "$edits" <<'PY'
import sys, os, subprocess, time, json, base64, http.client, urllib.parse, socket, re, shutil
work, edits = sys.argv[1], int(sys.argv[2])
data = os.path.join(work, f"data-{edits}")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = dict(os.environ, EDGERATE_OPERATOR_KEY="bench-operator-key", RUST_LOG="warn")
def start():
    return subprocess.Popen(["target/release/edgerate", "serve", "--data", data, "--http", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
def req(method, path, body=None, headers=None, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body, headers or {})
    r = c.getresponse(); b = r.read(); c.close(); return r.status, b
node = start()
key = None
for line in node.stdout:
    m = re.search(r"demo account: demo  key: (\S+)", line)
    if m: key = m.group(1); break
auth = {"authorization": "Basic " + base64.b64encode(f"demo:{key}".encode()).decode()}
while True:
    try:
        if req("GET", "/readyz")[0] == 200: break
    except OSError: time.sleep(0.05)
with open(os.path.join(work, "deck.csv"), "rb") as f:
    st, b = req("POST", "/api/ratecard/import.json?card=demo", f.read(), {**auth, "content-type": "text/csv"})
assert st == 200, b
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
form = {**auth, "content-type": "application/x-www-form-urlencoded"}
for i in range(edits):
    prefix = 10_000_000 + (i * 7919 * 13) % 89_999_999
    conn.request("POST", "/api/ratecard/rule/set.json",
                 urllib.parse.urlencode({"card": "demo", "prefix": str(prefix), "rate": f"0.{i % 9000 + 1:04d}"}), form)
    r = conn.getresponse(); r.read(); assert r.status == 200
time.sleep(25)  # two compaction rounds
node.kill(); node.wait()
started = time.perf_counter()
node = start()
while True:
    try:
        if req("GET", "/api/ratecard/query.json?card=demo&number=10000000", headers=auth)[0] == 200: break
    except OSError: pass
    time.sleep(0.02)
took = time.perf_counter() - started
rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{node.pid}/status").read()).group(1)) // 1024
disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs) / 2**20
print(f"{edits:<8} {took:10.2f} {disk:12.1f} {rss:12}")
node.kill(); node.wait()
shutil.rmtree(data)
PY
done
