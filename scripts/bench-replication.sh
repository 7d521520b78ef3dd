#!/usr/bin/env bash
# Replication benchmarks over a fresh 3-node cluster on loopback (release build):
# edit-to-visible latency, bytes per edit, deck imports live on every peer, catch-up after a
# partition. See scripts/bench-replication.py for what each measures.
#
#   scripts/bench-replication.sh                       # all, 10k-row deck, 60 s partition
#   BENCH=deck DECK_ROWS=1000000 scripts/bench-replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d)}
export HTTP_BASE=${HTTP_BASE:-28080} PEER_BASE=${PEER_BASE:-27080}
trap 'scripts/cluster.sh down; rm -rf "$CLUSTER_DIR"' EXIT
RUST_LOG=warn scripts/cluster.sh up 3 >/dev/null
urls="http://127.0.0.1:$((HTTP_BASE + 1)),http://127.0.0.1:$((HTTP_BASE + 2)),http://127.0.0.1:$((HTTP_BASE + 3))"
dirs="$CLUSTER_DIR/node-1,$CLUSTER_DIR/node-2,$CLUSTER_DIR/node-3"
python3 scripts/bench-replication.py "$urls" "$CLUSTER_DIR/demo.key" "$dirs"
