#!/usr/bin/env bash
# Builds the Debian package (target/debian/edgerate_*.deb) with cargo-deb.
#   scripts/package.sh           build it (release profile)
#   scripts/package.sh --check   build it, install it with dpkg -i, check the unit with
#                                systemd-analyze verify, run the installed binary as the service
#                                user on the installed config until /readyz answers, remove it
# PROFILE=dev builds it from the debug binary the tests already built (CI: no second build).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
if ! command -v cargo-deb >/dev/null; then
  cargo install cargo-deb --locked --version '^3' --no-default-features
fi
cargo deb -p edgerate-node --profile "$profile" --quiet
deb=$(ls -t target/debian/edgerate_*.deb | head -1)
echo "package: $deb"
[ "${1:-}" = "--check" ] || exit 0

missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The check installs and purges the package: never on a host where edgerate is installed.
if dpkg -s edgerate >/dev/null 2>&1 || [ -e /var/lib/edgerate ]; then
  echo "package check refused: edgerate is installed here (or /var/lib/edgerate exists)"; exit 1
fi
dpkg -i "$deb" >/dev/null
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
  dpkg --purge edgerate >/dev/null 2>&1 || true
  rm -rf /var/lib/edgerate
}
trap cleanup EXIT
unit=/lib/systemd/system/edgerate.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/edgerate.service
systemd-analyze verify "$unit"
getent passwd edgerate >/dev/null
[ "$(stat -c '%U:%G %a' /etc/edgerate/config.toml)" = "root:edgerate 640" ]
[ "$(stat -c '%U %a' /var/lib/edgerate)" = "edgerate 750" ]
# The installed binary, as the service user, on the installed config (HTTP moved to a free
# loopback port: the config listens on 0.0.0.0:8080).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd /var/lib/edgerate && exec runuser -u edgerate -- /usr/bin/edgerate serve \
    --config /etc/edgerate/config.toml --http "127.0.0.1:$port") >/tmp/edgerate-package.log 2>&1 &
node_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    [ -s /var/lib/edgerate/operator.key ] || { echo "no operator key in the data dir"; exit 1; }
    echo "package check: installed, unit verified, node ready on the installed config"
    exit 0
  fi
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.1
done
echo "the installed node did not become ready:"; cat /tmp/edgerate-package.log; exit 1
