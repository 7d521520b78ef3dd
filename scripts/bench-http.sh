#!/usr/bin/env bash
# HTTP benchmark: `ratecard/query.json` on a release node against nginx (1 worker) serving a
# static file with the same JSON bytes, same run. The server under test (node, then nginx) is
# pinned to core 0 and wrk to core 1; each is measured ROUNDS times, alternating, and the
# ratio node/nginx of the medians is printed.
#
#   scripts/bench-http.sh                      # DURATION=10 CONNS=32 ROUNDS=3
#   ASR_PRELOAD=1000000 URL_PATH='/api/lookup/asrplus.json?number=441234567890' scripts/bench-http.sh   # ASR Plus
#   LCR_PROVIDERS=5 URL_PATH='/api/routing/lcr.json?number=441234567890&card=demo' scripts/bench-http.sh   # routing
#     (LCR_PROVIDERS=N: N provider cards holding the demo deck, each rate scaled by its number)
#   CARD_ROWS=1000000 scripts/bench-http.sh   # query a card of that many prefixes (scripts/deck.py)
#   PERF=/tmp/perf.data scripts/bench-http.sh   # also profile the node during its last round
# TARGET is the ratio printed as the target (default 1.0, the hot path's).
# EDGERATE_BIN runs another build (a baseline) instead of building this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
CARD_ROWS=${CARD_ROWS:-0}
if [ "$CARD_ROWS" -gt 0 ]; then
  # The deck's second prefix, 10007919, extended to a full number.
  URL_PATH=${URL_PATH:-/api/ratecard/query.json?card=big&number=100079191234&duration=61}
else
  URL_PATH=${URL_PATH:-/api/ratecard/query.json?card=demo&number=441234567890&duration=61}
fi
TARGET=${TARGET:-1.0}

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need curl curl

bin=${EDGERATE_BIN:-target/release/edgerate}
[ -n "${EDGERATE_BIN:-}" ] || cargo build --release -q -p edgerate-node
work=$(mktemp -d)
chmod 755 "$work"
cleanup() { kill "${node_pid:-}" "${nginx_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node_port=$(free_port)
nginx_port=$(free_port)

EDGERATE_OPERATOR_KEY=bench-operator-key RUST_LOG=warn taskset -c 0 \
  "$bin" serve --data "$work/data" --http "127.0.0.1:$node_port" >"$work/node.out" 2>&1 &
node_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$node_port/readyz" >/dev/null && break; sleep 0.1; done
key=$(sed -n 's/^demo account: demo  key: \([0-9a-f]*\).*/\1/p' "$work/node.out")
auth="Authorization: Basic $(printf 'demo:%s' "$key" | base64)"

# ASR_PRELOAD=N: N distinct numbers' outcomes in ASR Plus first (CDR batches of 1000).
if [ "${ASR_PRELOAD:-0}" -gt 0 ]; then
  python3 - "http://127.0.0.1:$node_port" "$key" "$ASR_PRELOAD" <<'PY'
import sys, urllib.request, base64
url, key, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = "Basic " + base64.b64encode(f"demo:{key}".encode()).decode()
for b in range(0, total, 1000):
    rows = ["callid,dest_number,sip_code"] + [f"pre-{i},4420{i:08d},{(200, 404)[i % 2]}" for i in range(b, min(b + 1000, total))]
    req = urllib.request.Request(f"{url}/api/cdr/add.json", data=("\n".join(rows) + "\n").encode(), headers={"Authorization": auth, "Content-Type": "text/csv"})
    urllib.request.urlopen(req).read()
PY
  echo "ASR Plus holds $(curl -s "http://127.0.0.1:$node_port/metrics" | awk '/^edgerate_asrplus_numbers/ {print $2}') numbers; node RSS $(( $(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status") / 1024 )) MiB"
fi
# LCR_PROVIDERS=N: N provider cards, each the demo deck with its rates times 0.5, 0.6, …
if [ "${LCR_PROVIDERS:-0}" -gt 0 ]; then
  curl -sf -H "$auth" "http://127.0.0.1:$node_port/api/ratecard/export.json?card=demo" >"$work/demo.csv"
  for p in $(seq "$LCR_PROVIDERS"); do
    python3 - "$work/demo.csv" "$p" >"$work/prov-$p.csv" <<'PY'
import csv, sys
from decimal import Decimal
rows = list(csv.reader(open(sys.argv[1])))
factor = Decimal(5 + int(sys.argv[2])) / 10
w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(rows[0])
for r in rows[1:]:
    r[2] = str((Decimal(r[2]) * factor).quantize(Decimal("0.000001")))
    w.writerow(r)
PY
    curl -sf -H "$auth" -d "name=prov-$p&kind=provider" "http://127.0.0.1:$node_port/api/ratecard/create.json" >/dev/null
    curl -sf -H "$auth" -H 'content-type: text/csv' --data-binary @"$work/prov-$p.csv" \
      "http://127.0.0.1:$node_port/api/ratecard/import.json?card=prov-$p" >/dev/null
  done
fi
if [ "$CARD_ROWS" -gt 0 ]; then
  scripts/deck.py "$CARD_ROWS" >"$work/big.csv"
  curl -sf -H "$auth" -d "name=big" "http://127.0.0.1:$node_port/api/ratecard/create.json" >/dev/null
  curl -sf -H "$auth" -H 'content-type: text/csv' --data-binary @"$work/big.csv" \
    "http://127.0.0.1:$node_port/api/ratecard/import.json?card=big" >/dev/null
  echo "card big: $CARD_ROWS prefixes; node RSS $(( $(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status") / 1024 )) MiB"
fi
# One outcome in the event log, so that lookup/asrplus has something to answer.
curl -sf -H "$auth" -H 'content-type: text/csv' --data-binary $'callid,dest_number,sip_code\nbench-1,441234567890,404\n' \
  "http://127.0.0.1:$node_port/api/cdr/add.json" >/dev/null
mkdir -p "$work/www"
curl -sf -H "$auth" "http://127.0.0.1:$node_port$URL_PATH" >"$work/www/reply.json"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nginx_port;
    location / { root $work/www; default_type application/json; }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nginx_port/reply.json" >/dev/null && break; sleep 0.1; done
cmp -s "$work/www/reply.json" <(curl -s "http://127.0.0.1:$nginx_port/reply.json") || { echo "nginx does not serve the same bytes" >&2; exit 1; }

echo "reply: $(wc -c <"$work/www/reply.json") bytes: $(cat "$work/www/reply.json")"
run() { # name, wrk args…
  local name=$1; shift
  local out; out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@")
  local rps p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$name rps=$rps p99=$p99 non2xx=${errors:-0}"
}
results=$(for round in $(seq "$ROUNDS"); do
  run nginx "http://127.0.0.1:$nginx_port/reply.json"
  # PERF=FILE: a profile of the node (perf record -g) during its last round.
  if [ -n "${PERF:-}" ] && [ "$round" = "$ROUNDS" ]; then
    perf record -q -F 2000 -g -o "$PERF" -p "$node_pid" -- sleep "$DURATION" >/dev/null 2>&1 &
  fi
  run node -H "$auth" "http://127.0.0.1:$node_port$URL_PATH"
done)
echo "$results"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
nginx_rps=$(grep '^nginx' <<<"$results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
node_rps=$(grep '^node' <<<"$results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
echo "per-round ratios: $(paste <(grep '^node' <<<"$results" | sed 's/.*rps=\([0-9.]*\).*/\1/') <(grep '^nginx' <<<"$results" | sed 's/.*rps=\([0-9.]*\).*/\1/') | awk '{printf "%.2f ", $1/$2}')"
echo "median rps: node $node_rps, nginx $nginx_rps, ratio $(python3 -c "print(round($node_rps/$nginx_rps, 3))") (target >= $TARGET)"
