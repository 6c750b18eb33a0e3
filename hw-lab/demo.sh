#!/usr/bin/env bash
# README command 1: sets up the machine, then brings up the network-namespace lab — cvlan-api
# on SQLite plus three cvlan-agents joined to one CVLAN, pinging each other (hw-lab/lab.sh up) —
# and keeps it up until Ctrl-C, which tears it down (hw-lab/lab.sh down). The management UI is
# built and served by cvlan-api, reachable at http://127.0.0.1:8080 on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hw-lab/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cvlan/target}"
if [ -f ui/package.json ]; then
  echo "== building the management UI (ui/dist)"
  (cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
fi
trap 'echo; bash hw-lab/lab.sh down' EXIT
trap 'exit 0' INT TERM
bash hw-lab/lab.sh up
echo
echo "The lab stays up until Ctrl-C (then everything is torn down)."
while :; do sleep 3600; done
