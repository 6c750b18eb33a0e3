#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster if none is running and makes a `cvlan` superuser role for
# the tests and benchmarks (loopback only). Prints the admin URL to use.
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='cvlan'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE cvlan LOGIN SUPERUSER PASSWORD 'cvlan'\"" >/dev/null
echo "postgres://cvlan:cvlan@127.0.0.1/postgres"
