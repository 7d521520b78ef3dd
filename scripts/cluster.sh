#!/usr/bin/env bash
# A local cluster: N regions on loopback, each with its own certificate, config and data dir,
# all signed by one cluster CA, every node seeded with the first.
#
#   scripts/cluster.sh up 3     # build, start, print each node's URL and the demo credentials
#   scripts/cluster.sh status   # cluster/status of every node
#   scripts/cluster.sh down     # stop every node (data kept; `rm -rf` $CLUSTER_DIR to reset)
#
# CLUSTER_DIR (default ./edgerate-cluster), HTTP_BASE (18080) and PEER_BASE (17080) set where;
# EDGERATE_BIN runs another build instead of building this tree (a benchmark's baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CLUSTER_DIR:-./edgerate-cluster}
http_base=${HTTP_BASE:-18080}
peer_base=${PEER_BASE:-17080}
operator_key=${EDGERATE_OPERATOR_KEY:-cluster-operator-key}
regions=(uk us sg de jp br au in)
bin=${EDGERATE_BIN:-target/release/edgerate}

need_curl() { command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }; }

up() {
  local n=${1:-3}
  need_curl
  # EDGERATE_BIN: another build to run (a benchmark's baseline); else this tree's, built.
  [ -n "${EDGERATE_BIN:-}" ] || cargo build --release -q -p edgerate-node
  mkdir -p "$dir/certs"
  [ -f "$dir/certs/ca.pem" ] || "$bin" certs init --out "$dir/certs" >/dev/null
  for i in $(seq 1 "$n"); do
    local name="node-$i" region=${regions[$(( (i - 1) % ${#regions[@]} ))]}
    [ -f "$dir/certs/$name.pem" ] || "$bin" certs issue --ca "$dir/certs" --name "$name" --out "$dir/certs" >/dev/null
    local seeds='[]'
    [ "$i" -gt 1 ] && seeds="[\"127.0.0.1:$((peer_base + 1))\"]"
    cat >"$dir/$name.toml" <<TOML
[node]
id = "$name"
region = "$region"
data_dir = "$dir/$name"
[http]
listen = "127.0.0.1:$((http_base + i))"
[peer]
listen = "127.0.0.1:$((peer_base + i))"
seeds = $seeds
[tls]
ca = "$dir/certs/ca.pem"
cert = "$dir/certs/$name.pem"
key = "$dir/certs/$name.key"
[operator]
key = "$operator_key"
TOML
    if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then continue; fi
    RUST_LOG=${RUST_LOG:-info} "$bin" serve --config "$dir/$name.toml" >>"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
  done
  for i in $(seq 1 "$n"); do
    local url="http://127.0.0.1:$((http_base + i))"
    for _ in $(seq 200); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.05; done
    echo "node-$i (${regions[$(( (i - 1) % ${#regions[@]} ))]}): $url"
  done
  local first="http://127.0.0.1:$((http_base + 1))"
  if [ ! -f "$dir/demo.key" ]; then
    curl -sf -H "Authorization: Bearer $operator_key" -d name=demo -d rps=100000 -d daily=100000000 \
      "$first/api/admin/account/create.json" >"$dir/demo.json"
    local account key
    account=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["account"])' "$dir/demo.json")
    key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$dir/demo.json")
    echo "$account:$key" >"$dir/demo.key"
    curl -sf -u "$account:$key" -d name=demo "$first/api/ratecard/create.json" >/dev/null
    curl -sf -u "$account:$key" -H 'content-type: text/csv' --data-binary @node/src/demo.csv \
      "$first/api/ratecard/import.json?card=demo" >/dev/null
  fi
  echo "operator key: $operator_key"
  echo "demo credentials: $(cat "$dir/demo.key")   (curl -u ID:KEY URL/api/ratecard/query.json?card=demo&number=441234567890)"
}

down() {
  local pids=()
  for pid in "$dir"/*.pid; do
    [ -e "$pid" ] || continue
    pids+=("$(cat "$pid")")
    kill "${pids[-1]}" 2>/dev/null || true
    rm -f "$pid"
  done
  # Gone before this returns, so the next `up` finds its ports free.
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

status() {
  need_curl
  for toml in "$dir"/node-*.toml; do
    local listen
    listen=$(sed -n 's/^listen = "\(.*\)"/\1/p' "$toml" | head -1)
    curl -sf -H "Authorization: Bearer $operator_key" "http://$listen/api/cluster/status.json" || echo "{\"node\":\"$toml\",\"down\":true}"
    echo
  done
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [N] | status | down" >&2; exit 2 ;;
esac
