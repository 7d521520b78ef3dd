#!/usr/bin/env python3
"""Rule edits on one card while something else happens on the node (an import into another
card): each edit's answer time on the node that takes it and, with a peer given, the time until
the peer serves it. One edit at a time, EVERY_MS apart, until the file STOP exists.

    bench-edits.py NODE_URL [PEER_URL] CREDS CARD STOP
    prints: edits N, answered p50 .. p99 .. max .. ms[, on the peer p50 .. p99 .. max .. ms]
"""
import base64
import http.client
import json
import os
import sys
import time
import urllib.parse

EVERY_MS = 50
PEER_WAIT_S = 60


def connect(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def main():
    args = sys.argv[1:]
    node_url, peer_url = args[0], (args[1] if len(args) == 5 else None)
    creds, card, stop = args[-3:]
    auth = {"Authorization": "Basic " + base64.b64encode(creds.encode()).decode()}
    node, peer = connect(node_url), connect(peer_url) if peer_url else None

    def call(conn, path, query):
        conn.request("GET", f"/api/{path}.json?{urllib.parse.urlencode(query)}", headers=auth)
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise SystemExit(f"{path}: {reply.status} {body[:200]!r}")
        return json.loads(body)

    answered, seen = [], []
    i = 0
    while not os.path.exists(stop):
        i += 1
        prefix, rate = "4498", f"0.{i % 1000:03d}{i // 1000 % 10}1"
        start = time.perf_counter()
        call(node, "ratecard/rule/set", {"card": card, "prefix": prefix, "name": "edit", "rate": rate})
        answered.append(time.perf_counter() - start)
        if peer:
            want = json.loads(rate)
            while True:
                rules = call(peer, "ratecard/rules", {"card": card, "prefix": prefix})["rules"]
                if any(r["prefix"] == prefix and float(r["rate"]) == want for r in rules):
                    break
                if time.perf_counter() - start > PEER_WAIT_S:
                    raise SystemExit(f"edit {i} not on the peer after {PEER_WAIT_S} s")
                time.sleep(0.001)
            seen.append(time.perf_counter() - start)
        time.sleep(EVERY_MS / 1000)

    def summary(times):
        times = sorted(t * 1000 for t in times)
        at = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        return f"p50 {at(0.5):.1f} p99 {at(0.99):.1f} max {times[-1]:.1f} ms"

    if not answered:
        raise SystemExit("no edit made")
    line = f"edits {len(answered)}, answered {summary(answered)}"
    if seen:
        line += f", on the peer {summary(seen)}"
    print(line)


if __name__ == "__main__":
    main()
