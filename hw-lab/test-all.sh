#!/usr/bin/env bash
# Sets up and runs every test: formatting, lints, unit/integration tests on SQLite and
# PostgreSQL, the C ABI driver, fuzz-corpus replay, and benchmark smoke runs.
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
echo "== benchmark smoke runs"
cargo run -q -p cvlan-bench -- ipam --quick --clients 50
cargo run -q -p cvlan-bench -- fastpath --quick
cargo run -q -p cvlan-bench -- wg --quick
cargo run -q -p cvlan-bench -- policy --quick
cargo run -q -p cvlan-bench -- netmap --quick
echo "== summary"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
