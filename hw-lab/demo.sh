#!/usr/bin/env bash
# Sets up and starts the control plane on SQLite (loopback, plain HTTP), creates a superadmin,
# shows a few cvlanctl calls, then keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hw-lab/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cvlan/target}"
cargo build -q -p cvlan-api -p cvlanctl
bin="$CARGO_TARGET_DIR/debug"
data="${CVLAN_DATA_DIR:-/tmp/cvlan-demo}"
listen="${CVLAN_LISTEN:-127.0.0.1:8080}"
pw="${CVLAN_ADMIN_PASSWORD:-admin-password}"
export CVLANCTL_CONFIG="$data/cli.json"
mkdir -p "$data"
CVLAN_ADMIN_PASSWORD="$pw" "$bin/cvlan-api" create-admin --data-dir "$data" --email admin@cvlan.local
"$bin/cvlan-api" serve --data-dir "$data" --listen "$listen" &
api=$!
trap 'kill -TERM $api 2>/dev/null; wait $api 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
ctl() { echo "\$ cvlanctl $*"; "$bin/cvlanctl" --server "http://$listen" "$@"; }
ctl login --email admin@cvlan.local --password "$pw"
ctl tenant get acme >/dev/null 2>&1 || ctl tenant create acme
ctl cvlan get --tenant acme lab >/dev/null 2>&1 || ctl cvlan create --tenant acme lab --ipv4 10.20.0.0/24
ctl address create --tenant acme --cvlan lab
ctl token create --tenant acme --cvlan lab --expires 1h
ctl audit list --tenant acme
echo
echo "cvlan-api is serving on http://$listen (admin@cvlan.local / $pw); Ctrl-C stops it."
wait $api
