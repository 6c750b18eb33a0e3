#!/usr/bin/env bash
# Installs what CloudVLAN needs to build and test on Debian 12 (run as root). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=(build-essential pkg-config curl ca-certificates git postgresql postgresql-client iproute2 jq iputils-ping wireguard-go wireguard-tools iperf3 socat ethtool libdpdk-dev libclang-dev)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true
# The management UI builds with Node.js >= 20 and npm (Vite 8); Debian's packages when absent.
if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq nodejs npm >/dev/null
fi
node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<19)) { console.error("warning: Node.js "+process.versions.node+" is older than 20.19; the UI build needs 20.19+"); }' || true
