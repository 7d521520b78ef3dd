#!/usr/bin/env bash
# The test command: every crate's unit, property, HTTP and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
