#!/usr/bin/env bash
# Queries under write load: `ratecard/query.json` latency on node 1 of a 2-node cluster
# (release), paced by wrk (CONNS connections, each waiting PACE_MS between requests: an offered
# load the node keeps up with, so the percentiles show interference rather than queueing)
#   quiet     nothing else going on (the baseline of the same run);
#   import    while node 1 imports a ROWS-row deck into another card;
#   peer      while node 2 imports one and node 1 takes it from the replication stream.
# wrk runs on core 1; the nodes are not pinned (the import needs both cores). On this host both
# nodes share its two cores: during node 1's import, node 2 applies the same deck beside it.
# NODES=1 runs node 1 alone (quiet and import only), as it would be on a machine of its own.
# Beside the quiet run and each import, rule edits on the demo card (one every 50 ms): each one's
# answer time on node 1 and, with two nodes, the time until node 2 serves it (EDITS=0: none).
#
#   scripts/bench-load.sh                  # ROWS=1000000 CONNS=8 PACE_MS=1 NODES=2 EDITS=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
CONNS=${CONNS:-8}
PACE_MS=${PACE_MS:-1}
NODES=${NODES:-2}
EDITS=${EDITS:-1}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p edgerate-node
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d)}
export HTTP_BASE=${HTTP_BASE:-48080} PEER_BASE=${PEER_BASE:-47080}
trap 'scripts/cluster.sh down; rm -rf "$CLUSTER_DIR"' EXIT
RUST_LOG=warn scripts/cluster.sh up "$NODES" >/dev/null
creds=$(cat "$CLUSTER_DIR/demo.key")
auth="Authorization: Basic $(printf '%s' "$creds" | base64 -w0)"
node() { echo "http://127.0.0.1:$((HTTP_BASE + $1))"; }
scripts/deck.py "$ROWS" >"$CLUSTER_DIR/deck.csv"
for card in local peer; do
  curl -sf -H "$auth" -d "name=$card" "$(node 1)/api/ratecard/create.json" >/dev/null
done
# Both cards known on node 2 before it imports into one.
[ "$NODES" = 1 ] || for _ in $(seq 100); do curl -sf -H "$auth" "$(node 2)/api/ratecard/list.json" | grep -q '"peer"' && break; sleep 0.1; done
cat >"$CLUSTER_DIR/pace.lua" <<LUA
function delay() return $PACE_MS end
LUA
query="$(node 1)/api/ratecard/query.json?card=demo&number=441234567890&duration=61"
load() { # name, seconds
  local out; out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$2s" --latency -s "$CLUSTER_DIR/pace.lua" -H "$auth" "$query")
  echo "$1: $(awk '/^Requests\/sec/ {printf "%s rps", $2}' <<<"$out"), p50 $(awk '$1=="50%" {print $2}' <<<"$out"), p99 $(awk '$1=="99%" {print $2}' <<<"$out"), max $(awk '/Latency/ {print $4; exit}' <<<"$out"), non-2xx $(awk '/Non-2xx/ {print $NF}' <<<"$out")"
}
# Rule edits on the demo card beside the load (scripts/bench-edits.py): answered on node 1 and,
# with two nodes, seen on node 2.
edits_start() {
  [ "$EDITS" = 1 ] || return 0
  rm -f "$CLUSTER_DIR/edits.stop"
  local peer=; [ "$NODES" = 1 ] || peer=$(node 2)
  python3 scripts/bench-edits.py "$(node 1)" $peer "$creds" demo "$CLUSTER_DIR/edits.stop" >"$CLUSTER_DIR/edits.out" &
  edits_pid=$!
}
edits_stop() { [ "$EDITS" = 1 ] || return 0; touch "$CLUSTER_DIR/edits.stop"; wait "$edits_pid"; echo "  rule edits on the demo card $1: $(cat "$CLUSTER_DIR/edits.out")"; }
load quiet 10
edits_start
sleep 5
edits_stop "(quiet)"
import_on() { # node, card: the import's answer time
  curl -sf -o /dev/null -w '%{time_total}' -H "$auth" -H 'content-type: text/csv' \
    --data-binary @"$CLUSTER_DIR/deck.csv" "$(node "$1")/api/ratecard/import.json?card=$2"
}
(import_on 1 local >"$CLUSTER_DIR/local.s") &
importing=$!
edits_start
load "import on node 1 (during a $ROWS-row import)" 8
wait $importing
edits_stop "during the import into another card"
echo "  the import answered after $(cat "$CLUSTER_DIR/local.s") s"
[ "$NODES" = 1 ] && { load quiet 10; exit 0; }
(import_on 2 peer >"$CLUSTER_DIR/peer.s") &
importing=$!
edits_start
load "peer import (node 2 imports $ROWS rows, node 1 applies them)" 15
wait $importing
edits_stop "during node 2's import into another card"
echo "  node 2's import answered after $(cat "$CLUSTER_DIR/peer.s") s"
load quiet 10
