#!/usr/bin/env bash
# Manual smoke test (root): cvlan-api + two agents with real tunnels in namespaces cva<pid>-*
# (torn down on exit). Shows join, status, ping v4/v6, a control-plane outage (tunnels keep
# working) and an agent restart during the outage (tunnels back from the cached map).
# Usage: cargo build --bins -p cvlan-api -p cvlan-agent && sudo bash agent/daemon/scripts/netns-smoke.sh
set -uo pipefail
B="${CVLAN_BIN:-${CARGO_TARGET_DIR:-target}/debug}"
P=cva$$
D=/tmp/$P
mkdir -p $D
cleanup() {
  for h in c a b; do
    pids=$(ip netns pids $P-$h 2>/dev/null); [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  done
  sleep 1
  for h in c a b; do pids=$(ip netns pids $P-$h 2>/dev/null); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null; done
  for h in c a b ul; do ip netns del $P-$h 2>/dev/null; done
  rm -rf $D
}
trap cleanup EXIT
ip netns add $P-ul; ip -n $P-ul link set lo up
ip -n $P-ul link add br0 type bridge; ip -n $P-ul link set br0 up
i=1
for h in c a b; do
  ip netns add $P-$h; ip -n $P-$h link set lo up
  ip -n $P-ul link add h$i type veth peer name eth0 netns $P-$h
  ip -n $P-ul link set h$i master br0 up
  ip -n $P-$h addr add 10.251.0.$i/24 dev eth0; ip -n $P-$h link set eth0 up
  i=$((i+1))
done
X() { h=$1; shift; ip netns exec $P-$h "$@"; }
X c env CVLAN_ADMIN_PASSWORD=admin-password $B/cvlan-api create-admin --data-dir $D/api --email admin@x.test >/dev/null
X c setsid $B/cvlan-api serve --data-dir $D/api --listen 127.0.0.1:8080 --node-listen 10.251.0.1:8443 --node-tls-name 10.251.0.1 >$D/api.log 2>&1 &
for _ in $(seq 50); do X c curl -fs http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done
R() { X c curl -fsS -H "authorization: Bearer $T" -H 'content-type: application/json' "$@"; }
T=$(X c curl -fsS -H 'content-type: application/json' -d '{"email":"admin@x.test","password":"admin-password"}' http://127.0.0.1:8080/api/v1/auth/login | jq -r .token)
R -d '{"name":"acme"}' http://127.0.0.1:8080/api/v1/tenants >/dev/null
CV=$(R -d '{"name":"x","ipv4Prefix":"10.20.0.0/24"}' http://127.0.0.1:8080/api/v1/tenants/acme/cvlans | jq -r .id)
R -d '{"name":"icmp","rules":[{"sources":[{"any":true}],"destinations":[{"any":true}],"protocol":"PROTOCOL_ICMP","action":"ACTION_ALLOW"},{"sources":[{"any":true}],"destinations":[{"any":true}],"protocol":"PROTOCOL_ICMPV6","action":"ACTION_ALLOW"}]}' http://127.0.0.1:8080/api/v1/tenants/acme/policies >/dev/null
TOK=$(R -d "{\"cvlanId\":\"$CV\",\"reusable\":true}" http://127.0.0.1:8080/api/v1/tenants/acme/tokens | jq -r .token)
for h in a b; do
  X $h setsid $B/cvlan-agent --state-dir $D/$h --socket $D/$h.sock --log info >$D/$h.log 2>&1 &
done
sleep 1
for h in a b; do X $h $B/cvlan --socket $D/$h.sock up --server https://10.251.0.1:8443 --auth-key "$TOK" --hostname $h; done
sleep 2
X a $B/cvlan --socket $D/a.sock status
X a ip -br addr show cvlan0
X a $B/cvlan --socket $D/a.sock ping -c 3 b; echo "ping exit=$?"
X a $B/cvlan --socket $D/a.sock ping -c 2 "$(X b $B/cvlan --socket $D/b.sock ip -6)"; echo "ping6 exit=$?"
X b $B/cvlan --socket $D/b.sock status
# outage: stop the control plane; tunnels must keep working
kill -TERM $(ip netns pids $P-c); sleep 2
X a $B/cvlan --socket $D/a.sock status | head -3
X a $B/cvlan --socket $D/a.sock ping -c 2 b; echo "ping during outage exit=$?"
# restart agent a during the outage: tunnels back from the cache
kill -TERM $(ip netns pids $P-a); sleep 1; X a ip link show cvlan0 2>&1 | head -1
X a setsid $B/cvlan-agent --state-dir $D/a --socket $D/a.sock --log info >>$D/a.log 2>&1 &
sleep 2
X a $B/cvlan --socket $D/a.sock ping -c 2 b; echo "ping after restart during outage exit=$?"
echo "--- a.log (tail)"; tail -n 8 $D/a.log
