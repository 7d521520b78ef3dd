#!/usr/bin/env bash
# Import benchmark: a generated ROWS-row CSV deck (default 1M) uploaded to a release node.
# Prints the seconds from upload to live (the import answers only once the revision is durable
# and queryable), the node's peak RSS, and the restart time with the card loaded (SIGKILL, start,
# until a query on the big card answers). FORMAT=ime sends the same deck as an IME document with
# its checksum. DATES=N (CSV) gives the rows an effective_date column spread over N distinct
# dates (the first now), so the import makes N revisions. EDGERATE=PATH runs another build of
# the binary (to compare two builds).
#
#   scripts/bench-import.sh            # ROWS=1000000 FORMAT=csv
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
FORMAT=${FORMAT:-csv}
DATES=${DATES:-1}
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
EDGERATE=${EDGERATE:-target/release/edgerate}
[ "$EDGERATE" = target/release/edgerate ] && cargo build --release -q -p edgerate-node
work=$(mktemp -d)
cleanup() { kill -9 "${node_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

python3 - "$ROWS" "$FORMAT" "$DATES" >"$work/deck" <<'PY'
import hashlib, json, sys, time
sys.path.insert(0, "scripts")
from deck import row
rows, fmt, dates = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
now = int(time.time())
out = sys.stdout
if fmt == "csv" and dates > 1:
    out.write("prefix,name,rate,connect_fee,mcd,pulse,effective_date\n")
    for i in range(rows):
        prefix, name, rate = row(i)
        k = i % dates
        when = "" if k == 0 else str(now + 3600 + k * 86400)
        out.write(f"{prefix},{name},{rate},0,60,60,{when}\n")
elif fmt == "csv":
    out.write("prefix,name,rate,connect_fee,mcd,pulse\n")
    for i in range(rows):
        prefix, name, rate = row(i)
        out.write(f"{prefix},{name},{rate},0,60,60\n")
else:
    # Rates are JSON strings, so the canonical form (RFC 8785) is the compact dump with sorted keys.
    fields = [{"name": n} for n in ("prefix", "name", "rate", "connection_fee", "initial_interval", "billing_interval")]
    rates = [[*row(i), "0", "60", "60"] for i in range(rows)]
    doc = {"schema_version": "1.0.0", "name": "bench", "cards": {"big": {"currency": "USD", "fields": fields, "rates": rates}}}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    doc["metadata"] = {"checksum": hashlib.sha256(canonical.encode()).hexdigest()}
    json.dump(doc, out, separators=(",", ":"))
PY
echo "deck: $ROWS rows of $FORMAT, $(du -h "$work/deck" | cut -f1)"

start_node() {
  EDGERATE_OPERATOR_KEY=bench-operator-key RUST_LOG=warn "$EDGERATE" serve --data "$work/data" --http "127.0.0.1:$port" >>"$work/node.out" 2>&1 &
  node_pid=$!
}
start_node
for _ in $(seq 200); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.05; done
key=$(sed -n 's/^demo account: demo  key: \([0-9a-f]*\).*/\1/p' "$work/node.out")
auth=(-u "demo:$key")
curl -sf "${auth[@]}" -d name=big "$url/api/ratecard/create.json" >/dev/null
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
type=text/csv; [ "$FORMAT" = ime ] && type=application/json
import_s=$(curl -sf "${auth[@]}" -o "$work/import.json" -w '%{time_total}' -H "content-type: $type" \
  --data-binary @"$work/deck" "$url/api/ratecard/import.json?card=big&format=$FORMAT")
cat "$work/import.json"; echo
echo "import answered after ${import_s}s"
# Row 0 is in every revision (with DATES, the undated third).
probe="$url/api/ratecard/query.json?card=big&number=100000000&duration=61"
curl -sf "${auth[@]}" "$probe" >/dev/null
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
disk=$(du -sh "$work/data" | cut -f1)
sleep 15 # the blocking thread that ran the import exits after 10 s idle, and its heap with it
rss_settled=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")

kill -9 "$node_pid"; wait "$node_pid" 2>/dev/null || true
t0=$(date +%s.%N)
start_node
until curl -sf "${auth[@]}" "$probe" >/dev/null 2>&1; do sleep 0.02; done
t1=$(date +%s.%N)
rss_restart=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
echo "import of $ROWS rows live after ${import_s}s (target <= 10 s)"
echo "RSS: before import $((rss_before / 1024)) MiB, right after $((rss / 1024)) MiB, 15 s later $((rss_settled / 1024)) MiB, peak $((hwm / 1024)) MiB (target <= 1024 MiB); data dir $disk"
echo "restart to serving the big card: $(python3 -c "print(round($t1 - $t0, 2))") s (target <= 5 s); RSS after restart $((rss_restart / 1024)) MiB"
