#!/usr/bin/env bash
# CDR benchmark on a release node: ingest of TOTAL CDRs in CSV batches of BATCH (rated on the
# demo card; call times spread over the 23 hours after the node started: a CDR more than a day ahead is refused), then `cdr/list` by number and by time over them, ASR Plus memory, and
# `ratecard/simulate` of a draft revision of the demo card over all of them, and `cdr/rerate` on it.
#
#   scripts/bench-cdr.sh                 # TOTAL=1000000 BATCH=1000
#   TOTAL=10000000 RATING=0 scripts/bench-cdr.sh   # 10M: ingest and queries only
# EDGERATE_BIN runs another build (a baseline) instead of building this tree's.
#   PERF=/tmp/perf.data scripts/bench-cdr.sh   # also profile the node during the first re-rating
#   CALLIDS=random scripts/bench-cdr.sh   # callids in no order (as SIP Call-IDs), not call-N
# The ingest prints a line per million CDRs: its rate, the node's CPU per CDR, and the share of
# the time the node was busy (the rest it waited, mostly on the WAL's fsync at each commit).
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${TOTAL:-1000000}
BATCH=${BATCH:-1000}
RATING=${RATING:-1}
bin=${EDGERATE_BIN:-target/release/edgerate}
[ -n "${EDGERATE_BIN:-}" ] || cargo build --release -q -p edgerate-node
work=$(mktemp -d)
cleanup() { kill "${node_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
EDGERATE_OPERATOR_KEY=bench-operator-key RUST_LOG=warn "$bin" serve --data "$work/data" --http "127.0.0.1:$port" >"$work/node.out" 2>&1 &
node_pid=$!
for _ in $(seq 200); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.05; done
key=$(sed -n 's/^demo account: demo  key: \([0-9a-f]*\).*/\1/p' "$work/node.out")
now=$(($(date +%s) + 1))
python3 - "$TOTAL" "$BATCH" "$now" "$work" "${CALLIDS:-ordered}" <<'PY'
import sys, os, hashlib
total, batch, now, work, callids = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
callid = (lambda i: hashlib.md5(str(i).encode()).hexdigest()) if callids == "random" else (lambda i: f"call-{i}")
os.makedirs(f"{work}/batches")
for b in range(0, total, batch):
    with open(f"{work}/batches/{b // batch:06d}.csv", "w") as f:
        f.write("callid,dt,source_cli,dest_number,duration,sip_code,card\n")
        for i in range(b, min(b + batch, total)):
            code = (200, 200, 200, 486, 404, 503)[i % 6]
            dt = now + i * 23 * 3600 // total  # the demo card is live from its creation, CDRs are rated at their call time, and none may be more than a day ahead
            f.write(f"{callid(i)},{dt},1212555{i % 10000:04d},44{7000000000 + (i * 7919) % 999999999},{(i * 37) % 600},{code},demo\n")
PY
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
python3 - "$url" "$key" "$work/batches" "$node_pid" <<'PY'
import sys, os, time, urllib.request, base64, json
url, key, folder, pid = sys.argv[1:]
auth = "Basic " + base64.b64encode(f"demo:{key}".encode()).decode()
files = sorted(os.listdir(folder))
added = 0
def cpu():  # the node's user + system CPU seconds
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
t0 = time.time()
mark = (t0, cpu(), 0)
for name in files:
    body = open(os.path.join(folder, name), "rb").read()
    req = urllib.request.Request(f"{url}/api/cdr/add.json", data=body, headers={"Authorization": auth, "Content-Type": "text/csv"})
    added += json.load(urllib.request.urlopen(req))["added"]
    if added - mark[2] >= 1_000_000:  # each million: its rate, the node's CPU per CDR and busy share
        now, used = time.time(), cpu()
        n, secs = added - mark[2], now - mark[0]
        print(f"  ingest to {added:,}: {n / secs:,.0f} CDRs/s, node CPU {(used - mark[1]) * 1e6 / n:.1f} us a CDR, busy {(used - mark[1]) / secs:.0%}", flush=True)
        mark = (now, used, added)
dt = time.time() - t0
print(f"ingest: {added} CDRs in {len(files)} batches in {dt:.1f} s = {added / dt:,.0f} CDRs/s (target >= 50,000/s)")
PY
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
auth=(-u "demo:$key")
from=$now; to=$((now + 23 * 3600))
number=$(sed -n '2p' "$work/batches/000000.csv" | cut -d, -f4)
time_one() { curl -sf "${auth[@]}" -o /dev/null -w '%{time_total}' "$1"; }
best_of_5() {
  local best=99
  for _ in 1 2 3 4 5; do t=$(time_one "$1"); best=$(python3 -c "print(min($best, $t))"); done
  python3 -c "print(round($best * 1000, 1))"
}
for what in "number=$number" "limit=100" "limit=100&order=asc" "sip_code=404&limit=100" \
  "cli=12125550007&limit=100" "card=demo&limit=100" "sip_code=503&card=demo&limit=100"; do
  echo "cdr/list $what: best of 5 $(best_of_5 "$url/api/cdr/list.json?from=$from&to=$to&$what") ms (target <= 50 ms)"
done
month=$((now - 29 * 86400))
for group in "" "&group_by=sip_code" "&group_by=prefix" "&group_by=day"; do
  echo "cdr/stats over 30 days$group: best of 5 $(best_of_5 "$url/api/cdr/stats.json?from=$month&to=$to$group") ms (target <= 500 ms)"
done
# The worst range for the rollup: it ends half way through an hour of calls in the middle of
# the run, so half that hour's CDRs are read one by one (a range ending after the last call
# reads fewer than 1024 of them).
middle=$(( (now + 12 * 3600) / 3600 * 3600 + 1800 ))
for group in "" "&group_by=day"; do
  echo "cdr/stats over 30 days ending half way through an hour of calls$group: best of 5 $(best_of_5 "$url/api/cdr/stats.json?from=$month&to=$middle$group") ms (target <= 500 ms)"
done
echo "cdr/list by card ending half way through an hour of calls: best of 5 $(best_of_5 "$url/api/cdr/list.json?from=$from&to=$middle&card=demo&limit=100") ms (target <= 50 ms)"
curl -sf "${auth[@]}" "$url/api/cdr/list.json?from=$from&to=$to&number=$number&limit=1" | head -c 300; echo
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
# The event log's pages read through SQLite's file mapping count in RSS (RssFile, with the
# binary's own) but are the kernel's page cache; RssAnon is the node's memory.
anon=$(awk '/RssAnon/ {print $2}' "/proc/$node_pid/status")
file=$(awk '/RssFile/ {print $2}' "/proc/$node_pid/status")
echo "RSS: $((rss0 / 1024)) MiB before, $((rss1 / 1024)) MiB after ingest, peak $((hwm / 1024)) MiB; after the queries $((anon / 1024)) MiB anonymous + $((file / 1024)) MiB mapped files; data dir $(du -sh "$work/data" | cut -f1)"
curl -sf "$url/metrics" | grep -E '^edgerate_(asrplus_numbers|eventlog_records)'
# A restart over them: stopped (SIGTERM), started again, timed until it answers a listing.
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
t0=$(date +%s.%N)
EDGERATE_OPERATOR_KEY=bench-operator-key RUST_LOG=warn "$bin" serve --data "$work/data" --http "127.0.0.1:$port" >>"$work/node.out" 2>&1 &
node_pid=$!
until curl -sf "${auth[@]}" -o /dev/null "$url/api/cdr/list.json?from=$from&to=$to&number=$number"; do
  kill -0 "$node_pid" || { echo "the node did not restart" >&2; exit 1; }
  sleep 0.05
done
echo "restart to serving over $TOTAL CDRs: $(python3 -c "import time; print(round(time.time() - $t0, 2))") s (target <= 5 s)"
[ "$RATING" = 1 ] || exit 0
draft=$(curl -sf "${auth[@]}" -H 'content-type: text/csv' --data-binary $'prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.01,0,60,60\n447,UK Mobile,0.02,0,30,6\n' \
  "$url/api/ratecard/import.json?card=demo&live_at=draft" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rev"])')
sim_s=$(curl -sf "${auth[@]}" -o "$work/sim.json" -w '%{time_total}' "$url/api/ratecard/simulate.json?card=demo&revision=$draft&from=$from&to=$to")
python3 -c 'import json,sys; print("simulate totals:", json.load(open(sys.argv[1]))["totals"])' "$work/sim.json"
echo "ratecard/simulate over $TOTAL CDRs: ${sim_s}s (target <= 2 s)"
# Re-rating all of them on the draft (every cost changes), then again (nothing changes).
for pass in first second; do
  # PERF=FILE: a profile of the node (perf record -g) during the first pass.
  if [ -n "${PERF:-}" ] && [ "$pass" = first ]; then
    perf record -q -F 999 -g -o "$PERF" -p "$node_pid" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  t=$(curl -sf "${auth[@]}" -o "$work/rerate.json" -w '%{time_total}' -d "card=demo&revision=$draft&from=$from&to=$to" "$url/api/cdr/rerate.json")
  echo "cdr/rerate ($pass pass) over $TOTAL CDRs: ${t}s (target <= 30 s): $(cat "$work/rerate.json")"
  if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=; fi
done
