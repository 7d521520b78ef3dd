#!/usr/bin/env bash
# Restart time against edit history taken by three regions: a fresh 3-node release cluster
# (scripts/cluster.sh) with a ROWS-rule card (default 1M) imported on node 1 takes EDITS rule
# edits (default 100000), a third on each node at the same time, until every node holds all;
# after two compaction rounds node 3 is SIGKILLed and restarted. Prints the seconds from its
# start to the big card answering, its data dir's size and its RSS, against the same run's
# node 3 before any edit (the card freshly replicated to it, killed and restarted the same way).
#
#   scripts/bench-restart-cluster.sh                    # ROWS=1000000 EDITS=100000
#   ROWS=100000 EDITS=10000 scripts/bench-restart-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ROWS=${ROWS:-1000000} EDITS=${EDITS:-100000}
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d)}
export HTTP_BASE=${HTTP_BASE:-29080} PEER_BASE=${PEER_BASE:-29180}
trap 'scripts/cluster.sh down; rm -rf "$CLUSTER_DIR"' EXIT
RUST_LOG=warn scripts/cluster.sh up 3 >/dev/null
python3 - <<'PY'
import base64, http.client, json, os, re, signal, subprocess, threading, time, urllib.parse

rows, edits = int(os.environ["ROWS"]), int(os.environ["EDITS"])
cluster, base = os.environ["CLUSTER_DIR"], int(os.environ["HTTP_BASE"])
account, key = open(f"{cluster}/demo.key").read().strip().split(":")
auth = {"authorization": "Basic " + base64.b64encode(f"{account}:{key}".encode()).decode()}


def call(node, method, path, body=None, headers=None, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", base + node, timeout=timeout)
    c.request(method, path, body, {**auth, **(headers or {})})
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out


def rate(node, number):
    try:
        st, b = call(node, "GET", f"/api/ratecard/query.json?card=big&number={number}", timeout=5)
    except OSError:
        return None
    return json.loads(b).get("rate") if st == 200 else None


def wait(check, what, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")


def prefix(i):
    return 10_000_000 + (i * 7919 * 13) % 89_999_999


deck = subprocess.run(["scripts/deck.py", str(rows)], capture_output=True, check=True).stdout
assert call(1, "POST", "/api/ratecard/create.json", "name=big", {"content-type": "application/x-www-form-urlencoded"})[0] == 200
st, b = call(1, "POST", "/api/ratecard/import.json?card=big", deck, {"content-type": "text/csv"})
assert st == 200, b
probe = f"{10_000_000 + ((rows - 1) * 7919) % 89_999_999}1"
wait(lambda: all(rate(n, probe) is not None for n in (1, 2, 3)), "the deck live on every node")


def pid(node):
    return int(open(f"{cluster}/node-{node}.pid").read())


def restart_node3():
    """SIGKILLs node 3 and restarts it: (seconds to serving the big card, disk MiB, RSS MiB)."""
    os.kill(pid(3), signal.SIGKILL)
    wait(lambda: subprocess.run(["kill", "-0", str(pid(3))], capture_output=True).returncode != 0, "node 3 gone")
    data = f"{cluster}/node-3"
    disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs) / 2**20
    started = time.perf_counter()
    subprocess.run(["scripts/cluster.sh", "up", "3"], env=dict(os.environ, RUST_LOG="warn", EDGERATE_BIN="target/release/edgerate"), capture_output=True, check=True)
    wait(lambda: rate(3, probe) is not None, "node 3 serving the big card", timeout=300)
    took = time.perf_counter() - started
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid(3)}/status").read()).group(1)) // 1024
    return took, disk, rss


time.sleep(25)  # two compaction rounds, as after the edits
fresh = restart_node3()

per_node = edits // 3


def writer(node):
    c = http.client.HTTPConnection("127.0.0.1", base + node, timeout=60)
    form = {**auth, "content-type": "application/x-www-form-urlencoded"}
    for j in range(per_node):
        i = (node - 1) * per_node + j
        body = urllib.parse.urlencode({"card": "big", "prefix": str(prefix(i)), "rate": f"0.{i % 9000 + 1:04d}"})
        c.request("POST", "/api/ratecard/rule/set.json", body, form)
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status


t0 = time.perf_counter()
writers = [threading.Thread(target=writer, args=(n,)) for n in (1, 2, 3)]
for w in writers:
    w.start()
for w in writers:
    w.join()
took_edits = time.perf_counter() - t0
# Every node holds every region's last edit.
last = [((n - 1) * per_node + per_node - 1) for n in (1, 2, 3)]
wait(lambda: all(rate(n, f"{prefix(i)}1") == float(f"0.{i % 9000 + 1:04d}") for n in (1, 2, 3) for i in last),
     "every edit on every node")
time.sleep(25)  # two compaction rounds
edited = restart_node3()
print(f"{3 * per_node} edits from 3 regions in {took_edits:.1f} s on a {rows}-rule card")
print(f"{'':<24} {'restart_s':>10} {'disk_MiB':>10} {'rss_MiB':>10}")
for name, (took, disk, rss) in (("fresh (0 edits)", fresh), (f"after {3 * per_node} edits", edited)):
    print(f"{name:<24} {took:10.2f} {disk:10.1f} {rss:10}")
print(f"ratio after edits / fresh: disk {edited[1] / fresh[1]:.2f}x, rss {edited[2] / fresh[2]:.2f}x")
PY
