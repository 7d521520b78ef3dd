#!/usr/bin/env python3
"""Membership of a 10-node edgerate cluster on loopback, measured the way the SWIM baseline
(tests/examples/swim.rs) measures foca, so the two compare line by line:

  join     every node started at once, all seeded with node 1: time until every node has every
           other one `up` in its cluster/status;
  idle     UDP bytes each node sends per second to keep the mesh while nothing is written
           (edgerate_peer_wire_bytes_total: QUIC framing and keep-alives included), over WINDOW_S;
  down     one node SIGKILLed: time until every survivor no longer shows it `up`;
  back     the same node restarted: time until every node shows it `up` again.

Usage: bench-membership.py CLUSTER_DIR N (the nodes are started by scripts/cluster.sh).
"""
import json, os, signal, subprocess, sys, time, urllib.request

cluster_dir, n = sys.argv[1], int(sys.argv[2])
http_base = int(os.environ.get("HTTP_BASE", "38080"))
window = float(os.environ.get("WINDOW_S", "60"))
operator = os.environ.get("EDGERATE_OPERATOR_KEY", "cluster-operator-key")
names = [f"node-{i}" for i in range(1, n + 1)]


def url(i):
    return f"http://127.0.0.1:{http_base + i + 1}"


def get(i, path, auth=True):
    req = urllib.request.Request(url(i) + path)
    if auth:
        req.add_header("Authorization", f"Bearer {operator}")
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.read().decode()


def up_seen(i):
    """The peers node i shows up, or None while it does not answer."""
    try:
        status = json.loads(get(i, "/api/cluster/status.json"))
    except OSError:
        return None
    return {p["node"] for p in status.get("peers", []) if p.get("state") == "up"}


def wait(what, check, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    sys.exit(f"timed out: {what}")


def wire_out(i):
    total = 0.0
    for line in get(i, "/metrics", auth=False).splitlines():
        if line.startswith("edgerate_peer_wire_bytes_total") and 'direction="out"' in line:
            total += float(line.split()[-1])
    return total


def pid(i):
    return int(open(f"{cluster_dir}/{names[i]}.pid").read())


def cluster_up():
    """Starts every node not running (scripts/cluster.sh up), in the background: the nodes are
    launched at once, then it waits for each to be ready and loads the demo card."""
    return subprocess.Popen(["scripts/cluster.sh", "up", str(n)], stdout=subprocess.DEVNULL)


everyone = set(names)
start = time.monotonic()
launching = cluster_up()
join = wait("the full mesh", lambda: all(up_seen(i) == everyone - {names[i]} for i in range(n)))
launching.wait()
print(f"join: all {n} see all {n}: {join:.2f} s (from launching the processes)")

time.sleep(5)
before = [wire_out(i) for i in range(n)]
time.sleep(window)
rates = [(wire_out(i) - b) / window for i, b in enumerate(before)]
print(f"idle: UDP bytes sent per node per second over {window:.0f} s: "
      f"mean {sum(rates) / n:.0f}, min {min(rates):.0f}, max {max(rates):.0f} "
      f"({sum(rates) / n / (n - 1):.0f} per link)")

victim = n - 1
survivors = [i for i in range(n) if i != victim]
os.kill(pid(victim), signal.SIGKILL)
os.remove(f"{cluster_dir}/{names[victim]}.pid")
killed = time.monotonic()
first = {}


def all_down():
    for i in survivors:
        if i not in first and names[victim] not in (up_seen(i) or {names[victim]}):
            first[i] = time.monotonic() - killed
    return len(first) == len(survivors)


down = wait("every survivor to see the killed node down", all_down)
print(f"down: every survivor sees {names[victim]} down {down:.2f} s after SIGKILL "
      f"(first {min(first.values()):.2f} s)")

launching = cluster_up()
back = wait("every node to see the restarted node up",
            lambda: all(names[victim] in (up_seen(i) or set()) for i in survivors))
launching.wait()
print(f"back: every survivor sees {names[victim]} up {back:.2f} s after it was launched again")
