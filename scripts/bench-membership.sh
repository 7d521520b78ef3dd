#!/usr/bin/env bash
# Membership of 10 nodes on loopback, side by side: foca (SWIM, its LAN configuration) over UDP,
# and edgerate's mesh of QUIC links; join, idle bytes, detection of a SIGKILLed member and its
# return. The numbers behind the membership decision (replication/src/transport/mod.rs).
#
#   scripts/bench-membership.sh            # 10 nodes, 60 s idle window
#   N=5 WINDOW_S=20 scripts/bench-membership.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-10}
export WINDOW_S=${WINDOW_S:-60}
cargo build --release -q -p edgerate-node
cargo build --release -q -p edgerate-tests --example swim
echo "== foca (SWIM), $n members over UDP"
target/release/examples/swim "$n"
echo "== edgerate mesh, $n nodes over QUIC"
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d)}
export HTTP_BASE=${HTTP_BASE:-38080} PEER_BASE=${PEER_BASE:-37080}
trap 'scripts/cluster.sh down; rm -rf "$CLUSTER_DIR"' EXIT
RUST_LOG=warn python3 scripts/bench-membership.py "$CLUSTER_DIR" "$n"
