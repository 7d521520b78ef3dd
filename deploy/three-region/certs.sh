#!/usr/bin/env bash
# The cluster's CA and one certificate per node, made on an operator's machine (not on the
# nodes): ./certs.sh OUT. Copy OUT/ca.pem, OUT/<node>.pem and OUT/<node>.key to
# /etc/edgerate/certs/ on that node (owner root:edgerate, mode 0640); keep OUT/ca.key offline.
set -euo pipefail
out=${1:?usage: certs.sh OUT}
edgerate certs init --out "$out"
for node in lon-1 nyc-1 sgp-1; do
  edgerate certs issue --ca "$out" --name "$node" --out "$out"
done
