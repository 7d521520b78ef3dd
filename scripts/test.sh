#!/usr/bin/env bash
# The test command: every crate's unit, property, HTTP and end-to-end tests (multi-node
# clusters over QUIC included). Ends with one
# summary line, "tests: N passed, N failed", added up over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
# The cluster tests render the operator page in a real browser (Debian's chromium).
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
