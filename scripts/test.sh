#!/usr/bin/env bash
# The test command: every crate's unit, property, HTTP and end-to-end tests (multi-node
# clusters over QUIC included), then the OpenAPI document checked by real clients against a
# real node (scripts/spec.sh: schemathesis, a generated Python client). Ends with one summary
# line, "tests: N passed, N failed", added up over every test binary and the spec checks.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the end-to-end tests run against: a real browser for the operator page (Debian's
# chromium), a real SIP peer for ping and dial (sipp, Debian's sip-tester), and iproute2 for
# the partitions made with network namespaces.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v sipp >/dev/null || missing+=(sip-tester)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
if [ $# -eq 0 ]; then
  scripts/spec.sh 2>&1 | tee -a "$log" || status=$?
fi
awk '/^(test result|spec):/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
