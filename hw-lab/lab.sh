#!/usr/bin/env bash
# The network-namespace lab, for humans and the README demo (run as root):
#
#   bash hw-lab/lab.sh up            build; start cvlan-api and three agents in namespaces on a
#                                    private bridge; join them to a CVLAN; show them pinging
#   bash hw-lab/lab.sh status        namespaces, processes and each agent's `cvlan status`
#   bash hw-lab/lab.sh ctl ARGS…     cvlanctl as the superadmin, inside the control namespace
#   bash hw-lab/lab.sh exec HOST CMD run CMD in a lab host (ctrl, agent1, agent2, agent3)
#   bash hw-lab/lab.sh down          kill everything and delete every lab namespace, including
#                                    leftovers of crashed tests (all namespaces named cvlab-*)
#
# Addresses exist only inside the lab's namespaces: hosts are 10.250.0.N/24 and fd00:250::N/64
# on a bridge in their own underlay namespace; the REST API listens on the control namespace's
# loopback (use `lab.sh ctl`), the node listener on 10.250.0.1:8443. The management UI (built
# into ui/dist) is served by cvlan-api and forwarded to the host's loopback with socat:
# http://127.0.0.1:$CVLAN_UI_PORT (default 8080; CVLAN_UI_PORT=0 turns the forward off).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cvlan/target}"

P=cvlab-demo                       # namespace prefix (Rust labs use cvlab-<pid>-…)
DIR="${CVLAN_LAB_DIR:-/tmp/cvlan-lab}"
BIN="${CVLAN_LAB_BIN:-$CARGO_TARGET_DIR/debug}"  # CVLAN_LAB_BIN: prebuilt binaries, no build
AGENTS=(agent1 agent2 agent3)
CTRL_IP=10.250.0.1
REST=http://127.0.0.1:8080
PW="${CVLAN_ADMIN_PASSWORD:-admin-password}"
TENANT=demo
CVLAN=lab
UI_PORT="${CVLAN_UI_PORT:-8080}"
UI_DIR="${CVLAN_UI_DIR:-$PWD/ui/dist}"

ns() { echo "$P-$1"; }
in_ns() { local h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { echo "\$ $*"; "$@"; }

ctl() {
  in_ns ctrl env CVLANCTL_CONFIG="$DIR/cli.json" "$BIN/cvlanctl" --server "$REST" "$@"
}
cvlan() { local h=$1; shift; in_ns "$h" "$BIN/cvlan" --socket "$DIR/$h/agent.sock" "$@"; }

kill_ns() {
  local n=$1 pids
  pids=$(ip netns pids "$n" 2>/dev/null || true)
  [ -z "$pids" ] && return 0
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  pids=$(ip netns pids "$n" 2>/dev/null || true)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  sleep 0.2
}

down() {
  local n all
  if [ -f "$DIR/ui-forward.pid" ]; then
    kill -TERM -- "-$(cat "$DIR/ui-forward.pid")" 2>/dev/null || true
  fi
  all=$(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cvlab-' || true)
  for n in $all; do kill_ns "$n"; done
  for n in $all; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$DIR"
  [ -n "$all" ] && echo "deleted namespaces: $(echo $all | tr '\n' ' ')" || echo "no lab namespaces left"
}

add_host() {                       # add_host NAME INDEX
  local h=$1 i=$2
  ip netns add "$(ns "$h")"
  ip -n "$(ns "$h")" link set lo up
  ip -n "$(ns ul)" link add "h$i" type veth peer name eth0 netns "$(ns "$h")"
  ip -n "$(ns ul)" link set "h$i" master br0 up
  ip -n "$(ns "$h")" addr add "10.250.0.$i/24" dev eth0
  ip -n "$(ns "$h")" addr add "fd00:250::$i/64" dev eth0 nodad
  ip -n "$(ns "$h")" link set eth0 up
  mkdir -p "$DIR/$h"
}

# start NAME LOG CMD…: a daemon in a host's namespace, detached from this shell.
start() {
  local h=$1 log=$2; shift 2
  in_ns "$h" setsid "$@" >"$log" 2>&1 </dev/null &
}

# EXIT trap while `up` runs (an ERR trap would be inherited by the background daemons'
# subshells with set -E, and missed inside functions without it).
on_fail() {
  local rc=$?
  trap - EXIT
  [ "$rc" = 0 ] && return 0
  echo >&2
  echo "lab.sh up failed (exit $rc); last lines of the logs:" >&2
  for f in "$DIR"/*/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f" >&2
    tail -n 20 "$f" >&2
  done
  echo "tearing the lab down" >&2
  down >&2
  exit "$rc"
}

up() {
  command -v ping >/dev/null && command -v curl >/dev/null && command -v jq >/dev/null ||
    bash hw-lab/setup.sh
  if [ -z "${CVLAN_LAB_BIN:-}" ]; then
    say "building cvlan-api, cvlanctl, cvlan-agent, cvlan"
    cargo build -q --bins -p cvlan-api -p cvlanctl -p cvlan-agent
  fi
  for b in cvlan-api cvlanctl cvlan-agent cvlan; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b after the build" >&2; exit 1; }
  done
  down >/dev/null
  trap on_fail EXIT

  say "namespaces: underlay bridge + ctrl (10.250.0.1) + ${AGENTS[*]}"
  mkdir -p "$DIR"
  ip netns add "$(ns ul)"
  ip -n "$(ns ul)" link set lo up
  ip -n "$(ns ul)" link add br0 type bridge
  ip -n "$(ns ul)" link set br0 up
  add_host ctrl 1
  local i=2 h
  for h in "${AGENTS[@]}"; do add_host "$h" $i; i=$((i + 1)); done
  ip netns list | grep "^$P-" | awk '{print "  " $1}'

  say "control plane: cvlan-api on SQLite in $DIR/ctrl/api"
  in_ns ctrl env CVLAN_ADMIN_PASSWORD="$PW" "$BIN/cvlan-api" create-admin \
    --data-dir "$DIR/ctrl/api" --email admin@cvlan.local
  local ui=()
  if [ -f "$UI_DIR/index.html" ]; then
    ui=(--ui-dir "$UI_DIR" --public-url "http://127.0.0.1:$UI_PORT")
  fi
  start ctrl "$DIR/ctrl/cvlan-api.log" "$BIN/cvlan-api" serve --data-dir "$DIR/ctrl/api" \
    --listen 127.0.0.1:8080 --node-listen "$CTRL_IP:8443" --node-tls-name "$CTRL_IP" "${ui[@]}"
  local ok=
  for _ in $(seq 1 100); do
    in_ns ctrl curl -fs -m 1 "$REST/readyz" >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "cvlan-api did not become ready" >&2; false; }
  echo "REST $REST (inside $(ns ctrl)), node listener https://$CTRL_IP:8443"
  if [ "$UI_PORT" != 0 ] && command -v socat >/dev/null; then
    # Each browser connection: socat on the host's loopback → a socat inside the control
    # namespace → cvlan-api on that namespace's loopback.
    setsid socat "TCP-LISTEN:$UI_PORT,bind=127.0.0.1,reuseaddr,fork" \
      "EXEC:ip netns exec $(ns ctrl) socat STDIO TCP\:127.0.0.1\:8080" \
      >"$DIR/ui-forward.log" 2>&1 </dev/null &
    echo $! >"$DIR/ui-forward.pid"
    if [ ${#ui[@]} -gt 0 ]; then
      echo "management UI: http://127.0.0.1:$UI_PORT  (admin@cvlan.local / $PW)"
    else
      echo "REST on the host: http://127.0.0.1:$UI_PORT (no UI: build it with npm --prefix ui ci && npm --prefix ui run build)"
    fi
  fi

  say "tenant, CVLAN, policy and a registration token (cvlanctl)"
  CVLANCTL_PASSWORD="$PW" ctl login --email admin@cvlan.local
  show ctl tenant create "$TENANT"
  show ctl cvlan create --tenant "$TENANT" "$CVLAN" --ipv4 10.20.0.0/24 --ipv6 fd20::/64
  show ctl policy create --tenant "$TENANT" allow-all --rule 'src=any dst=any action=allow'
  echo "\$ cvlanctl token create --tenant $TENANT --cvlan $CVLAN --reusable --expires 1h"
  local token
  token=$(ctl -o json token create --tenant "$TENANT" --cvlan "$CVLAN" --reusable --expires 1h | jq -r .token)
  [ -n "$token" ] && [ "$token" != null ] || { echo "no token in cvlanctl's answer" >&2; false; }
  echo "(token: ${token:0:12}…)"

  say "agents: cvlan-agent + cvlan up in ${AGENTS[*]}"
  for h in "${AGENTS[@]}"; do
    start "$h" "$DIR/$h/cvlan-agent.log" "$BIN/cvlan-agent" \
      --state-dir "$DIR/$h/state" --socket "$DIR/$h/agent.sock"
    ok=
    for _ in $(seq 1 50); do [ -S "$DIR/$h/agent.sock" ] && { ok=1; break; }; sleep 0.2; done
    [ -n "$ok" ] || { echo "cvlan-agent in $h did not open its socket" >&2; false; }
    echo "\$ [$h] cvlan up --server https://$CTRL_IP:8443 --auth-key … --hostname $h"
    cvlan "$h" up --server "https://$CTRL_IP:8443" --auth-key "$token" --hostname "$h"
  done

  say "waiting for every agent to see the two others"
  for h in "${AGENTS[@]}"; do
    ok=
    for _ in $(seq 1 75); do
      [ "$(cvlan "$h" status --json 2>/dev/null | jq '.peers | length' 2>/dev/null)" = 2 ] && { ok=1; break; }
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "$h does not see two peers" >&2; cvlan "$h" status >&2 || true; false; }
  done
  echo "\$ [agent1] cvlan status"
  cvlan agent1 status

  say "pings over the tunnels"
  local src dst
  for src in "${AGENTS[@]}"; do
    for dst in "${AGENTS[@]}"; do
      [ "$src" = "$dst" ] && continue
      echo "\$ [$src] cvlan ping $dst"
      cvlan "$src" ping "$dst"
    done
  done
  local ip3
  ip3=$(cvlan agent3 ip | grep -oE '([0-9]+\.){3}[0-9]+' | head -n1)
  echo "\$ [agent1] ping -c 3 $ip3   # agent3's CVLAN address, plain ping over cvlan0"
  in_ns agent1 ping -c 3 -W 2 "$ip3"
  trap - EXIT

  say "the lab is up"
  cat <<EOF
  bash hw-lab/lab.sh status                  every agent's view
  bash hw-lab/lab.sh ctl node list --tenant $TENANT
  bash hw-lab/lab.sh exec agent2 bash        a shell on agent2 (cvlan: $BIN/cvlan --socket $DIR/agent2/agent.sock)
  bash hw-lab/lab.sh down                    tear it all down
EOF
}

status() {
  say "lab namespaces"
  ip netns list | awk '/^cvlab-/ {print "  " $1}'
  local h
  for h in ctrl "${AGENTS[@]}"; do
    ip netns list | grep -q "^$(ns "$h") " || ip netns list | grep -qx "$(ns "$h")" || continue
    say "$h ($(in_ns "$h" ip -4 -o addr show dev eth0 | awk '{print $4}'))"
    in_ns "$h" ps -o pid=,args= -p "$(ip netns pids "$(ns "$h")" | tr '\n' ',' | sed 's/,$//')" 2>/dev/null || true
    [ -S "$DIR/$h/agent.sock" ] && cvlan "$h" status || true
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  ctl) shift; ctl "$@" ;;
  exec) shift; h=$1; shift; in_ns "$h" "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
