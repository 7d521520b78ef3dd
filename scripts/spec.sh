#!/usr/bin/env bash
# The OpenAPI document checked by real clients against a real node (tests/spec/run.py): a tour
# of every service validated against the document, a client generated with
# openapi-python-client, and schemathesis as an account and as the operator. Installs the pinned
# clients from PyPI into target/spec-venv. SPEC_SECONDS bounds each schemathesis run (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/spec-venv
if ! "$venv/bin/python" -c 'import schemathesis, jsonschema, openapi_python_client' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/spec/requirements.txt
fi
command -v sipp >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
}
cargo build --quiet -p edgerate-node
exec "$venv/bin/python" tests/spec/run.py target/debug/edgerate
