#!/usr/bin/env bash
# Sets up and runs every test: formatting, lints, unit/integration tests on SQLite and
# PostgreSQL, the C ABI driver, fuzz-corpus replay, the management UI (generated API types,
# lint, unit tests, real-browser tests in Debian's Chromium incl. single sign-on through a
# real OpenID provider), and benchmark smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hw-lab/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cvlan/target}"
mkdir -p "$CARGO_TARGET_DIR"
CVLAN_TEST_POSTGRES_URL=$(bash hw-lab/postgres.sh | tail -n1)
export CVLAN_TEST_POSTGRES_URL CVLAN_BENCH_POSTGRES_URL="$CVLAN_TEST_POSTGRES_URL"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (SQLite + PostgreSQL)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The end-to-end tests (hw-lab/lab/tests/e2e.rs) run the real binaries from the target dir.
cargo build --workspace --bins
cargo test --workspace 2>&1 | tee "$log"
echo "== VPP plugin (built only where VPP's development files are installed)"
bash vpp-plugin/plugin/build.sh
echo "== UI: generated API types, lint, typecheck, unit tests, build, browser tests"
dpkg -s chromium >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq chromium >/dev/null; }
export CVLAN_API_BIN="$CARGO_TARGET_DIR/debug/cvlan-api"
uilog=$(mktemp)
trap 'rm -f "$log" "$uilog"' EXIT
(
  cd ui
  npm ci --no-audit --no-fund --loglevel=error
  npm run -s check:api
  npm run -s lint
  npm run -s typecheck
  npm test -- --reporter=dot
  npm run -s build
  npm run -s e2e
) 2>&1 | tee "$uilog"
echo "== benchmark smoke runs"
cargo run -q -p cvlan-bench -- ipam --quick --clients 50
cargo run -q -p cvlan-bench -- fastpath --quick
cargo run -q -p cvlan-bench -- wg --quick
cargo run -q -p cvlan-bench -- gateway --quick
cargo run -q -p cvlan-bench -- policy --quick
cargo run -q -p cvlan-bench -- netmap --quick
echo "== summary"
read -r rp rf < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
read -r up ep ef < <(sed 's/\x1b\[[0-9;]*m//g' "$uilog" | awk '
  /^ *Tests +[0-9]+ passed/ { v = $2 } /^# pass / { p = $3 } /^# fail / { f = $3 }
  END { print v + 0, p + 0, f + 0 }')
echo "rust: $rp passed, $rf failed; ui unit (vitest): $up passed; ui browser (chromium): $ep passed, $ef failed"
echo "tests: $((rp + up + ep)) passed, $((rf + ef)) failed"
