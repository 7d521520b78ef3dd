#!/usr/bin/env python3
"""Replication benchmarks against a running local cluster (scripts/bench-replication.sh starts it).

Measures, over nodes on loopback:
  edit    one rule edit on node 1 until visible on every other node (p50/p99/max), beside the
          edit's own acknowledged latency on node 1 (the baseline of the same run); with
          EDIT_CARD_ROWS the card first gets a deck of that many rules;
  bytes   replication bytes sent by node 1 per rule edit, per peer (from /metrics);
  deck    an N-row deck imported on node 1 until it answers on every other node;
  heal    node 3 cut off for PARTITION_S seconds with writes on both sides, then healed: time
          until every node answers the same.
"""
import http.client, json, os, statistics, sys, time, base64, random

urls = sys.argv[1].split(",")
auth_id, auth_key = open(sys.argv[2]).read().strip().split(":")
data_dirs = sys.argv[3].split(",")
what = os.environ.get("BENCH", "edit,bytes,deck,heal").split(",")
EDITS = int(os.environ.get("EDITS", "300"))
DECK_ROWS = [int(x) for x in os.environ.get("DECK_ROWS", "10000").split(",")]
PARTITION_S = int(os.environ.get("PARTITION_S", "60"))
EDIT_CARD_ROWS = int(os.environ.get("EDIT_CARD_ROWS", "0"))
basic = "Basic " + base64.b64encode(f"{auth_id}:{auth_key}".encode()).decode()


class Node:
    def __init__(self, url):
        self.host = url.split("//")[1]
        self.conn = http.client.HTTPConnection(self.host, timeout=600)

    def call(self, service, params="", body=None, ctype=None):
        headers = {"Authorization": basic}
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in (1, 2):
            try:
                self.conn.request("POST" if body is not None else "GET", f"/api/{service}.json?{params}", body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                # The node closes a keep-alive connection left idle (during a long import
                # elsewhere): open a new one.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, timeout=600)
                if attempt == 2:
                    raise

    def raw(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.read().decode()


nodes = [Node(u) for u in urls]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_visible(check, timeout=120):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return True
    raise SystemExit("timed out waiting for replication")


def bench_edit():
    nodes[0].call("ratecard/create", "name=bench-edit", body=b"")
    wait_visible(lambda: all(n.call("ratecard/get", "card=bench-edit")[0] == 200 for n in nodes[1:]))
    if EDIT_CARD_ROWS:
        import_everywhere("bench-edit", EDIT_CARD_ROWS)
    visible, acked = [], []
    for i in range(EDITS):
        rate = f"0.{i + 1:06d}"
        t0 = time.perf_counter()
        status, _ = nodes[0].call("ratecard/rule/set", f"card=bench-edit&prefix=4420&name=x&rate={rate}", body=b"")
        assert status == 200
        acked.append(time.perf_counter() - t0)
        want = float(rate)
        for n in nodes[1:]:
            wait_visible(lambda: json.loads(n.call("ratecard/query", "card=bench-edit&number=44201234")[1]).get("rate") == want)
        visible.append(time.perf_counter() - t0)
    ms = lambda x: f"{x * 1e3:.2f} ms"
    print(f"edit: {EDITS} edits on a card of {EDIT_CARD_ROWS} rules; acknowledged on node 1: p50 {ms(pct(acked, 50))}, p99 {ms(pct(acked, 99))}; "
          f"visible on all {len(nodes) - 1} peers: p50 {ms(pct(visible, 50))}, p99 {ms(pct(visible, 99))}, max {ms(max(visible))} (edit {visible.index(max(visible)) + 1})")


def sent_bytes(node):
    total = 0.0
    for line in node.raw("/metrics").splitlines():
        if line.startswith("edgerate_replication_bytes_total") and 'direction="out"' in line:
            total += float(line.split()[-1])
    return total


def bench_bytes():
    nodes[0].call("ratecard/create", "name=bench-bytes", body=b"")
    wait_visible(lambda: all(n.call("ratecard/get", "card=bench-bytes")[0] == 200 for n in nodes[1:]))
    time.sleep(2.5)  # let anti-entropy ticks settle so only the edits are counted
    before = sent_bytes(nodes[0])
    for i in range(100):
        nodes[0].call("ratecard/rule/set", f"card=bench-bytes&prefix={3300 + i}&name=x&rate=0.{i + 1:03d}", body=b"")
    want = 0.1
    for n in nodes[1:]:
        wait_visible(lambda: json.loads(n.call("ratecard/query", "card=bench-bytes&number=3399")[1]).get("rate") == want)
    after = sent_bytes(nodes[0])
    print(f"bytes: {(after - before) / 100 / (len(nodes) - 1):.0f} bytes sent per rule edit per peer "
          f"(node 1's replication traffic over 100 edits, anti-entropy ticks included)")


def deck(rows, seed):
    lines = ["prefix,name,rate,connect_fee,mcd,pulse"]
    for i in range(rows):
        lines.append(f"{10_000_000 + (i * 7919 + seed) % 89_999_999},D{i % 500},0.{(i * 31 + seed) % 10000:04d},0,60,60")
    return ("\n".join(lines) + "\n").encode()


def import_everywhere(card, rows):
    """Imports an N-row deck into `card` on node 1; returns (live locally, live on every peer) in s."""
    body = deck(rows, rows)
    probe = f"{10_000_000 + ((rows - 1) * 7919 + rows) % 89_999_999}99"
    t0 = time.perf_counter()
    status, out = nodes[0].call("ratecard/import", f"card={card}", body=body, ctype="text/csv")
    assert status == 200, out
    local = time.perf_counter() - t0
    for n in nodes[1:]:
        wait_visible(lambda: json.loads(n.call("ratecard/query", f"card={card}&number={probe}")[1]).get("revision") == 2, timeout=600)
    return local, time.perf_counter() - t0


def bench_deck(rows):
    card = f"bench-deck-{rows}"
    nodes[0].call("ratecard/create", f"name={card}", body=b"")
    wait_visible(lambda: all(n.call("ratecard/get", f"card={card}")[0] == 200 for n in nodes[1:]))
    local, everywhere = import_everywhere(card, rows)
    print(f"deck: {rows} rows live on node 1 in {local:.2f} s, on every peer in {everywhere:.2f} s")


def snapshot(n):
    now = int(time.time())
    rules = n.call("ratecard/rules", "card=bench-heal&limit=10000")[1]
    cdrs = json.loads(n.call("cdr/list", f"from={now - 86400}&to={now + 86400}&limit=1")[1]).get("total")
    return rules, cdrs


def bench_heal():
    a, c = nodes[0], nodes[2]
    a.call("ratecard/create", "name=bench-heal", body=b"")
    wait_visible(lambda: all(n.call("ratecard/get", "card=bench-heal")[0] == 200 for n in nodes[1:]))
    isolate = os.path.join(data_dirs[2], "isolate")
    open(isolate, "w").close()
    time.sleep(1)
    end = time.perf_counter() + PARTITION_S
    writes, k = 0, 0
    now = int(time.time())
    while time.perf_counter() < end:
        for node, side in ((a, 1), (c, 3)):
            node.call("ratecard/rule/set", f"card=bench-heal&prefix={side}{k % 3000:04d}&name=s{side}&rate=0.{random.randint(1, 999):03d}", body=b"")
            csv = f"callid,dt,source_cli,dest_number,duration,sip_code\nheal-{side}-{k},{now - 60},1,44770{side}{k:06d},0,486\n"
            node.call("cdr/add", "", body=csv.encode(), ctype="text/csv")
            writes += 2
        k += 1
        time.sleep(0.05)
    os.remove(isolate)
    t0 = time.perf_counter()
    wait_visible(lambda: len({snapshot(n) for n in nodes}) == 1, timeout=120)
    print(f"heal: node 3 cut off for {PARTITION_S} s while {writes} writes (rules and CDRs) landed on both sides; "
          f"all nodes identical {time.perf_counter() - t0:.2f} s after the heal")


if "edit" in what:
    bench_edit()
if "bytes" in what:
    bench_bytes()
if "deck" in what:
    for rows in DECK_ROWS:
        bench_deck(rows)
if "heal" in what:
    bench_heal()
