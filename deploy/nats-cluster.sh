#!/usr/bin/env bash
# A 3-node NATS JetStream cluster on loopback, for headend (see deploy/README.md).
#
#   deploy/nats-cluster.sh start [N]    start all nodes, or node N (1-3)
#   deploy/nats-cluster.sh stop [N]     stop all nodes, or node N (SIGTERM, waits)
#   deploy/nats-cluster.sh status       one line per node: up/down, pid, client URL
#   deploy/nats-cluster.sh urls         the client URLs, comma-separated (HEADEND_NATS_URL)
#
# Environment (defaults in brackets):
#   HEADEND_CLUSTER_DIR   work dir for configs, JetStream stores, logs, pids [./nats-cluster]
#   HEADEND_CLUSTER_CLIENT_PORT   client port of node 1; nodes use +0,+1,+2 [4231]
#   HEADEND_CLUSTER_ROUTE_PORT    cluster (route) port of node 1 [6231]
#   HEADEND_CLUSTER_MONITOR_PORT  HTTP monitoring port of node 1 [8231]
#   NATS_SERVER           nats-server binary [nats-server on PATH, else /usr/sbin/nats-server]
set -euo pipefail

DIR="${HEADEND_CLUSTER_DIR:-./nats-cluster}"
CLIENT="${HEADEND_CLUSTER_CLIENT_PORT:-4231}"
ROUTE="${HEADEND_CLUSTER_ROUTE_PORT:-6231}"
MONITOR="${HEADEND_CLUSTER_MONITOR_PORT:-8231}"
BIN="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
NODES=(1 2 3)

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

conf() {  # write the config of node $1
  local n=$1 i routes=""
  for i in "${NODES[@]}"; do
    routes+="    \"nats-route://127.0.0.1:$((ROUTE + i - 1))\"\n"
  done
  mkdir -p "$DIR/n$n/js"
  printf '%b' "server_name: \"headend-n$n\"
listen: \"127.0.0.1:$((CLIENT + n - 1))\"
http: \"127.0.0.1:$((MONITOR + n - 1))\"
pid_file: \"$DIR/n$n.pid\"
log_file: \"$DIR/n$n.log\"
jetstream {
  store_dir: \"$DIR/n$n/js\"
  max_file_store: 10GB
}
cluster {
  name: \"headend\"
  listen: \"127.0.0.1:$((ROUTE + n - 1))\"
  routes: [
$routes  ]
}
" > "$DIR/n$n.conf"
}

pid_of() { [[ -f "$DIR/n$1.pid" ]] && cat "$DIR/n$1.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

start_node() {
  local n=$1
  if alive "$n"; then echo "node $n already up (pid $(pid_of "$n"))"; return; fi
  conf "$n"
  nohup "$BIN" -c "$DIR/n$n.conf" >/dev/null 2>&1 &
  echo $! > "$DIR/n$n.pid"
  for _ in $(seq 1 100); do  # wait for the client port
    if (exec 3<>"/dev/tcp/127.0.0.1/$((CLIENT + n - 1))") 2>/dev/null; then
      echo "node $n up: nats://127.0.0.1:$((CLIENT + n - 1)) (pid $(pid_of "$n"))"; return
    fi
    sleep 0.1
  done
  echo "node $n did not start; see $DIR/n$n.log" >&2; exit 1
}

stop_node() {
  local n=$1 p
  p=$(pid_of "$n")
  if [[ -z "$p" ]] || ! kill -0 "$p" 2>/dev/null; then echo "node $n already down"; return; fi
  kill "$p"
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" || true
  rm -f "$DIR/n$n.pid"
  echo "node $n stopped"
}

which_nodes() { if [[ -n "${1:-}" ]]; then echo "$1"; else echo "${NODES[@]}"; fi; }

case "${1:-}" in
  start)  for n in $(which_nodes "${2:-}"); do start_node "$n"; done ;;
  stop)   for n in $(which_nodes "${2:-}"); do stop_node "$n"; done ;;
  status)
    for n in "${NODES[@]}"; do
      if alive "$n"; then state=up; else state=down; fi
      echo "node $n $state pid=$(pid_of "$n") url=nats://127.0.0.1:$((CLIENT + n - 1))"
    done ;;
  urls)
    echo "nats://127.0.0.1:$CLIENT,nats://127.0.0.1:$((CLIENT + 1)),nats://127.0.0.1:$((CLIENT + 2))" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
