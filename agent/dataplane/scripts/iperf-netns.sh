#!/usr/bin/env bash
# TCP throughput between two network namespaces over: raw veth, cvlan-wg, wireguard-go.
# Usage: iperf-netns.sh [raw|cvlan|wggo] [seconds] [extra iperf3 client args...]
# Needs root, iperf3, and (for cvlan) CVLAN_WG=path/to/cvlan-wg (default: release build).
set -euo pipefail
mode=${1:-cvlan}; secs=${2:-10}; shift $(( $# > 2 ? 2 : $# )) || true
bin=${CVLAN_WG:-${CARGO_TARGET_DIR:-target}/release/cvlan-wg}
A=cvperf-a-$$; B=cvperf-b-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add va$$ netns "$A" type veth peer name vb$$ netns "$B"
ip -n "$A" link set va$$ name eth0; ip -n "$B" link set vb$$ name eth0
ip -n "$A" addr add 192.168.77.1/24 dev eth0; ip -n "$B" addr add 192.168.77.2/24 dev eth0
for n in "$A" "$B"; do ip -n "$n" link set lo up; ip -n "$n" link set eth0 up; done
target=192.168.77.2
case "$mode" in
  raw) ;;
  cvlan)
    read -r ska pka < <("$bin" --genkey); read -r skb pkb < <("$bin" --genkey)
    ip netns exec "$A" "$bin" --private-key "$ska" --address 10.77.0.1/24 \
      --peer "$pkb,endpoint=192.168.77.2:51820,allowed=10.77.0.2/32" >/dev/null & pids+=($!)
    ip netns exec "$B" "$bin" --private-key "$skb" --address 10.77.0.2/24 \
      --peer "$pka,endpoint=192.168.77.1:51820,allowed=10.77.0.1/32" >/dev/null & pids+=($!)
    target=10.77.0.2 ;;
  wggo)
    # the UAPI socket (/var/run/wireguard/NAME.sock) is shared across namespaces: unique names
    ia=wga$$; ib=wgb$$
    ka=$(wg genkey); kb=$(wg genkey)
    WG_PROCESS_FOREGROUND=1 ip netns exec "$A" wireguard-go "$ia" >/dev/null 2>&1 & pids+=($!)
    WG_PROCESS_FOREGROUND=1 ip netns exec "$B" wireguard-go "$ib" >/dev/null 2>&1 & pids+=($!)
    for _ in $(seq 50); do ip -n "$A" link show "$ia" >/dev/null 2>&1 && ip -n "$B" link show "$ib" >/dev/null 2>&1 && break; sleep 0.1; done
    ip netns exec "$A" wg set "$ia" private-key <(echo "$ka") listen-port 51820 peer "$(echo "$kb" | wg pubkey)" endpoint 192.168.77.2:51820 allowed-ips 10.77.0.2/32
    ip netns exec "$B" wg set "$ib" private-key <(echo "$kb") listen-port 51820 peer "$(echo "$ka" | wg pubkey)" endpoint 192.168.77.1:51820 allowed-ips 10.77.0.1/32
    ip -n "$A" addr add 10.77.0.1/24 dev "$ia"; ip -n "$B" addr add 10.77.0.2/24 dev "$ib"
    ip -n "$A" link set "$ia" mtu 1420 up; ip -n "$B" link set "$ib" mtu 1420 up
    target=10.77.0.2 ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
for _ in $(seq 50); do ip netns exec "$A" ping -c1 -W1 "$target" >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec "$B" iperf3 -s -1 >/dev/null & pids+=($!)
sleep 0.5
ip netns exec "$A" iperf3 -c "$target" -t "$secs" "$@" | tail -4
