#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one run, one after the other (never two at once: the host
# has two cores), and one table of measured against target, with each one's baseline from the
# same run (one memory read, nginx, the same query with nothing else going on, ...).
#
#   scripts/bench.sh            # full sizes (1M-prefix cards, 1M CDRs and rows): ~35 minutes
#   scripts/bench.sh --quick    # small sizes, one round each: a few minutes
#   scripts/bench.sh --write    # also puts the table in BENCHMARKS.md, between its markers
#   ONLY="prefix lcr" scripts/bench.sh --quick   # some of: prefix lcr http cdr load import
#                                                #   replication edit restart membership
#   CDR_TOTAL=10000000 ONLY=cdr scripts/bench.sh   # the CDR queries at 10M (default 1M; quick 100k)
#
# Each benchmark's own script keeps its parameters (see its header); the raw output of this run
# is kept in target/bench/<name>.txt. The criterion benchmarks run on core 1 (taskset): left
# to move between cores, one run of the prefix match read 192 ns against 83-97 pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 write=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --write) write=1 ;;
    *) echo "usage: $0 [--quick] [--write]" >&2; exit 2 ;;
  esac
done
only=${ONLY:-prefix lcr http cdr load import replication edit restart membership}
out=target/bench
mkdir -p "$out"
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }
wants() { [[ " $only " == *" $1 "* ]]; }
# `pick FILE REGEX` prints the first capture group of the first line matching.
pick() { sed -nE "s#.*$2.*#\1#p" "$1" | head -1; }
# criterion prints a long benchmark name and its times on two lines: one line each.
one_line() { sed -E -i ':a;N;$!ba;s/\n +time:/ time:/g' "$1"; }
size() { if [ "$quick" = 1 ]; then echo "$1"; else echo "$2"; fi; }
# `http_run FILE`: scripts/bench-http.sh at this run's size (its other settings from the
# environment); `http_row TITLE FILE TARGET`: its median ratio, rps and p99 against nginx.
http_run() { ROUNDS=$(size 1 3) DURATION=$(size 5 10) scripts/bench-http.sh >"$1" 2>&1; }
http_row() {
  row "$1" "$(pick "$2" 'ratio ([0-9.]+)')×, node $(pick "$2" 'median rps: node ([0-9.]+),') rps, p99 $(pick "$2" '^node rps=[0-9.]+ p99=([0-9.]+[mu]?s)')" \
    "$3" "nginx $(pick "$2" 'nginx ([0-9.]+), ratio') rps, same bytes"
}

cargo build --release -q -p edgerate-node

if wants prefix; then
  f=$out/prefix.txt
  taskset -c 1 cargo bench -q -p edgerate-model --bench hot_path -- --warm-up-time 1 --measurement-time "$(size 2 5)" >"$f" 2>&1
  one_line "$f"
  row "prefix match, 1M prefixes, carrier-shaped (criterion)" \
    "$(pick "$f" 'longest_match_1m_carrier +time: +\[[^ ]+ [^ ]+ ([0-9.]+ [nµ]s)') median; p99 of batches $(pick "$f" 'carrier: batches of 16: median [0-9]+ ns, p99 ([0-9]+ ns)')" \
    "≤ 100 ns, p99 ≤ 400 ns" "one memory read $(pick "$f" 'baseline: .*: ([0-9]+ ns)')"
  row "prefix match, 1M prefixes, random (criterion)" \
    "$(pick "$f" 'longest_match_1m_random +time: +\[[^ ]+ [^ ]+ ([0-9.]+ [nµ]s)') median; p99 of batches $(pick "$f" 'random: batches of 16: median [0-9]+ ns, p99 ([0-9]+ ns)')" \
    "≤ 100 ns" "index $(pick "$f" 'random: .*index ([0-9]+ MiB)') per 1M rules"
fi

if wants lcr; then
  f=$out/lcr.txt
  taskset -c 1 cargo bench -q -p edgerate-model --bench routing -- --warm-up-time 1 --measurement-time "$(size 2 5)" >"$f" 2>&1
  one_line "$f"
  row "routing/lcr in process, 5 provider cards of 200k prefixes" \
    "$(pick "$f" 'lcr_5x200k +time: +\[[^ ]+ [^ ]+ ([0-9.]+ [nµ]s)') per number" "≤ 2 µs" "—"
fi

if wants http; then
  f=$out/http.txt
  http_run "$f"
  http_row "ratecard/query.json vs nginx, demo card, one core each" "$f" "≥ 1.0×, p99 ≤ 1 ms"
  f=$out/http-big.txt
  n=$(size 100000 1000000)
  CARD_ROWS=$n http_run "$f"
  http_row "ratecard/query.json vs nginx, $n-prefix card" "$f" "≥ 1.0×, p99 ≤ 1 ms"
  f=$out/http-asrplus.txt
  ASR_PRELOAD=$(size 100000 1000000) URL_PATH='/api/lookup/asrplus.json?number=441234567890' http_run "$f"
  http_row "lookup/asrplus.json vs nginx, $(pick "$f" 'ASR Plus holds ([0-9]+) numbers') numbers" "$f" "≥ 1.0×, p99 ≤ 1 ms"
  f=$out/http-lcr.txt
  LCR_PROVIDERS=5 URL_PATH='/api/routing/lcr.json?number=441234567890&card=demo' TARGET=0.7 http_run "$f"
  http_row "routing/lcr.json vs nginx, 5 provider cards and a sell card, one core each" "$f" "≥ 0.7×"
fi

if wants cdr; then
  f=$out/cdr.txt
  total=${CDR_TOTAL:-$(size 100000 1000000)}
  # Re-rating and simulation are timed at 1M (their targets'); at 10M only ingest and queries.
  rating=$(size 0 1); [ "$total" -le 1000000 ] || rating=0
  TOTAL=$total RATING=$rating scripts/bench-cdr.sh >"$f" 2>&1
  row "CDR ingest, batches of 1000, $total CDRs" "$(pick "$f" '= ([0-9,]+ CDRs/s)')" "≥ 50k/s (10M)" "—"
  for by in number:number= time:limit=100 sip_code:sip_code=404 card:card=demo cli:cli=; do
    row "cdr/list by ${by%%:*}, $total CDRs" "$(pick "$f" "cdr/list ${by#*:}[^ ]*: best of 5 ([0-9.]+ ms)")" "≤ 50 ms (10M)" "—"
  done
  row "cdr/stats over 30 days, $total CDRs" "$(pick "$f" 'cdr/stats over 30 days: best of 5 ([0-9.]+ ms)')" "≤ 500 ms (10M)" "—"
  row "cdr/stats over 30 days ending half way through an hour of calls (the rollup's worst), $total CDRs" \
    "$(pick "$f" 'ending half way through an hour of calls: best of 5 ([0-9.]+ ms)')" "≤ 500 ms (10M)" "—"
  row "restart to serving over $total CDRs" "$(pick "$f" 'restart to serving over [0-9]+ CDRs: ([0-9.]+ s)')" "≤ 5 s" "—"
  if [ "$rating" = 1 ]; then
    row "ratecard/simulate over $total CDRs" "$(pick "$f" 'simulate over [0-9]+ CDRs: ([0-9.]+s)')" "≤ 2 s" "—"
    row "cdr/rerate of $total CDRs" "$(pick "$f" 'rerate \(first pass\) over [0-9]+ CDRs: ([0-9.]+s)')" "≤ 30 s" "—"
  fi
fi

if wants load; then
  f=$out/load.txt
  ROWS=$(size 100000 1000000) scripts/bench-load.sh >"$f" 2>&1
  quiet=$(pick "$f" '^quiet: .*p99 ([0-9.]+[mu]s)')
  row "query p99 while this node imports a deck, its peer on the same 2 cores, a rule edit every 50 ms beside it" "$(pick "$f" '^import on node 1.*p99 ([0-9.]+[mu]?s)')" "≤ 1 ms" "quiet p99 $quiet"
  row "query p99 while a peer's deck is applied, edits beside it" "$(pick "$f" '^peer import.*p99 ([0-9.]+[mu]?s)')" "≤ 1 ms" "quiet p99 $quiet"
  # `edits PHASE`: the p99s of the edits made beside it, answered / seen on the peer.
  edits() { sed -nE "s#.*rule edits on the demo card $1: .*answered p50 [0-9.]+ p99 ([0-9.]+) .*on the peer p50 [0-9.]+ p99 ([0-9.]+).*#p99 \1 / \2 ms#p" "$f" | head -1; }
  row "rule edits on the demo card while node 1 imports into another card: answered / seen on the peer" "$(edits 'during the import into another card')" "unaffected by the import" \
    "quiet: $(edits '\(quiet\)')"
  row "rule edits on node 1 while node 2 imports into another card: answered / seen on node 2" "$(edits "during node 2's import into another card")" "unaffected by the import" "—"
  f=$out/load-alone.txt
  NODES=1 EDITS=0 ROWS=$(size 100000 1000000) scripts/bench-load.sh >"$f" 2>&1
  row "query p99 while this node imports a deck, the node alone" "$(pick "$f" '^import on node 1.*p99 ([0-9.]+[mu]?s)')" "≤ 1 ms" \
    "quiet p99 $(pick "$f" '^quiet: .*p99 ([0-9.]+[mu]?s)')"
fi

if wants import; then
  f=$out/import.txt
  n=$(size 100000 1000000)
  ROWS=$n scripts/bench-import.sh >"$f" 2>&1
  row "import a $n-row CSV deck" "live after $(pick "$f" 'live after ([0-9.]+s)')" "≤ 10 s (1M)" "—"
  row "restart to serving with the $n-rule card" "$(pick "$f" 'restart to serving the big card: ([0-9.]+ s)')" "≤ 5 s" "—"
fi

if wants replication; then
  f=$out/replication.txt
  EDITS=$(size 50 300) DECK_ROWS=$(size 10000 1000000) PARTITION_S=$(size 10 60) scripts/bench-replication.sh >"$f" 2>&1
  row "rule edit visible on both peers" "$(pick "$f" 'visible on all [0-9]+ peers: (p50 [0-9.]+ ms, p99 [0-9.]+ ms)')" \
    "p50 ≤ 5 ms, p99 ≤ 15 ms" "acknowledged locally $(pick "$f" 'acknowledged on node 1: (p50 [0-9.]+ ms)')"
  row "deck imported on one node, live on every peer" "$(pick "$f" '^deck: ([0-9]+ rows .* in [0-9.]+ s)$')" "≤ 20 s (1M)" \
    "live locally $(pick "$f" 'live on node 1 in ([0-9.]+ s)')"
  row "one node cut off, then healed" "$(pick "$f" 'identical ([0-9.]+ s) after the heal') after the heal" "≤ 5 s" \
    "$(pick "$f" 'while ([0-9]+ writes)') during the cut"
fi

if wants edit; then
  f=$out/edit.txt
  n=$(size 100000 1000000)
  BENCH=edit EDITS=200 EDIT_CARD_ROWS=$n scripts/bench-replication.sh >"$f" 2>&1
  row "rule edit visible on both peers, $n-rule card right after its import" \
    "$(pick "$f" 'visible on all [0-9]+ peers: (p50 [0-9.]+ ms, p99 [0-9.]+ ms)')" "p99 ≤ 15 ms" \
    "acknowledged locally $(pick "$f" 'acknowledged on node 1: (p50 [0-9.]+ ms)')"
fi

if wants restart; then
  f=$out/restart.txt
  ROWS=$(size 100000 1000000) EDITS=$(size 10000 100000) scripts/bench-restart-cluster.sh >"$f" 2>&1
  row "restart to serving after $(pick "$f" '^([0-9]+ edits from 3 regions)')" \
    "$(pick "$f" '^after [0-9]+ edits +([0-9.]+)') s; disk $(pick "$f" 'disk ([0-9.]+x)'), RSS $(pick "$f" 'rss ([0-9.]+x)') of fresh" \
    "≤ 5 s; disk ≤ 3×, RSS ≤ 1.5×" "fresh $(pick "$f" '^fresh \(0 edits\) +([0-9.]+)') s"
fi

if wants membership; then
  f=$out/membership.txt
  WINDOW_S=$(size 10 60) scripts/bench-membership.sh >"$f" 2>&1
  row "10-node mesh: join / killed node seen down" \
    "$(sed -n '/edgerate mesh/,$p' "$f" | pick /dev/stdin 'join: .*: ([0-9.]+ s)') / $(sed -n '/edgerate mesh/,$p' "$f" | pick /dev/stdin 'down: .* ([0-9.]+ s) after')" \
    "converges" "foca $(pick "$f" 'join: all [0-9]+ know all [0-9]+: ([0-9.]+ s)') / $(pick "$f" 'down: every survivor declared .* ([0-9.]+ s) after')"
fi

table=$(
  echo "| benchmark | measured | target | baseline, same run |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
)
echo
echo "$(date -u +%F) $(size quick full) run:"
echo "$table"
echo "$table" >"$out/table.md"
if [ "$write" = 1 ]; then
  python3 - "$out/table.md" "$(date -u +%F) ($(size quick full) run, scripts/bench.sh)" <<'PY'
import sys
table, when = open(sys.argv[1]).read(), sys.argv[2]
path = "BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- bench.sh table -->", "<!-- end of bench.sh table -->"
block = f"{start}\nLatest `scripts/bench.sh`: {when}\n\n{table}{end}"
if start in text:
    head, rest = text.split(start, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    first = text.index("\n## ")
    text = text[:first] + "\n\n" + block + "\n" + text[first:]
open(path, "w").write(text)
PY
  echo "BENCHMARKS.md: table updated"
fi
