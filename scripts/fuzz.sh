#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) with the nightly toolchain, from
# the corpus kept in fuzz/corpus/, and prints executions and findings per target. A crash is
# saved by libFuzzer under fuzz/artifacts/TARGET/; turn it into a regression test in the normal
# suite before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
targets=(vars deck_csv deck_ime cdr_batch dataset_csv peer_message sip_datagram)
cd fuzz
cargo +nightly fuzz build -O
printf '%-14s %12s %10s %s\n' target executions corpus result
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 \
       -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="FOUND (see fuzz/artifacts/$t)"
    status=1
  fi
  execs=$( (grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true) | grep -o '[0-9]*$' || true)
  [ -n "$execs" ] || execs=$( (grep -oE '^#[0-9]+' "$log" || true) | tail -1 | tr -d '#')
  size=$(find "corpus/$t" -type f | wc -l)
  printf '%-14s %12s %10s %s\n' "$t" "${execs:-?}" "$size" "$result"
  [ "$result" = ok ] || tail -40 "$log"
  rm -f "$log"
done
exit "$status"
