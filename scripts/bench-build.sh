#!/usr/bin/env bash
# Build benchmark: PROVIDERS provider cards (default 5) of ROWS prefixes each (default 200k),
# carrier-shaped and overlapping (every card prices the same national ranges, 80 % of its
# prefixes shared with the others), on a release node. Prints the seconds `ratecard/build`
# takes to answer (its revision is live and durable then), the node's peak RSS, and the time of
# one provider rule edit that an automatic rebuild carries into the customer card (the edit
# answers once the customer card holds it).
#
#   scripts/bench-build.sh             # PROVIDERS=5 ROWS=200000
set -euo pipefail
cd "$(dirname "$0")/.."
PROVIDERS=${PROVIDERS:-5}
ROWS=${ROWS:-200000}
EDITS=${EDITS:-20}
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
EDGERATE=${EDGERATE:-target/release/edgerate}
[ "$EDGERATE" = target/release/edgerate ] && cargo build --release -q -p edgerate-node
work=$(mktemp -d)
cleanup() { kill -9 "${node_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

for p in $(seq "$PROVIDERS"); do
  python3 - "$ROWS" "$p" >"$work/deck-$p" <<'PY'
import random, sys
rows, card = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(card)
shared = int(rows * 0.8)
out = sys.stdout
out.write("prefix,name,rate,connect_fee,mcd,pulse\n")
seen = set()
# NPA-NXX-shaped 7-digit prefixes under "1", the shared ranges the same on every card.
for i in range(shared):
    seen.add(str(1_200_0000 + (i * 7919) % 7_999_999)[:8])
while len(seen) < rows:
    seen.add(str(rng.randrange(20_000_000, 99_999_999)))
for prefix in sorted(seen):
    out.write(f"{prefix},Dest {prefix[:3]},0.{rng.randrange(1, 9999):04d},0,{rng.choice([1, 6, 30, 60])},{rng.choice([1, 6, 60])}\n")
PY
done

EDGERATE_OPERATOR_KEY=bench-operator-key RUST_LOG=warn "$EDGERATE" serve --data "$work/data" --http "127.0.0.1:$port" >>"$work/node.out" 2>&1 &
node_pid=$!
for _ in $(seq 200); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.05; done
key=$(sed -n 's/^demo account: demo  key: \([0-9a-f]*\).*/\1/p' "$work/node.out")
auth=(-u "demo:$key")
from=""
for p in $(seq "$PROVIDERS"); do
  curl -sf "${auth[@]}" -d "name=prov-$p&kind=provider" "$url/api/ratecard/create.json" >/dev/null
  curl -sf "${auth[@]}" -H 'content-type: text/csv' --data-binary @"$work/deck-$p" \
    "$url/api/ratecard/import.json?card=prov-$p" >/dev/null
  from="$from${from:+,}prov-$p"
done
curl -sf "${auth[@]}" -d name=retail "$url/api/ratecard/create.json" >/dev/null
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
build_s=$(curl -sf "${auth[@]}" -o "$work/build.json" -w '%{time_total}' \
  -d "card=retail&from=$from&mix=min&profit_percent=10&min_margin=0.001&rebuild=auto" \
  "$url/api/ratecard/build.json")
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ("revision","rules","skipped")})' "$work/build.json"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
# Rule edits of provider 1 that the automatic rebuild carries into the customer card.
prefix=$(sed -n 2p "$work/deck-1" | cut -d, -f1)
times=()
for i in $(seq "$EDITS"); do
  t=$(curl -sf "${auth[@]}" -o /dev/null -w '%{time_total}' \
    -d "card=prov-1&prefix=$prefix&rate=0.0000$((i % 9 + 1))" "$url/api/ratecard/rule/set.json")
  times+=("$t")
done
got=$(curl -sf "${auth[@]}" "$url/api/ratecard/query.json?card=retail&number=${prefix}0")
echo "customer rule after the edits: $got"
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
echo "build of a customer card from $PROVIDERS provider cards of $ROWS prefixes: live after ${build_s}s (target <= 3 s)"
echo "RSS: before the build $((rss_before / 1024)) MiB, peak $((hwm / 1024)) MiB (the peak includes the imports before; target <= 1024 MiB)"
echo "provider rule edit with the automatic rebuild, $EDITS edits: median ${median}s, max ${max}s (target <= 0.05 s)"
