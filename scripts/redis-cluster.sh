#!/usr/bin/env bash
# A local 3-master Redis Cluster on loopback for the cluster tests (no replicas, no persistence).
#   scripts/redis-cluster.sh start   # idempotent: leaves a healthy cluster running
#   scripts/redis-cluster.sh stop    # shuts the nodes down and removes their data
# Ports: REDIS_CLUSTER_PORTS (default "7001 7002 7003"); data: /tmp/stockgate-redis-cluster.
# Tests reach it as REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003.
set -euo pipefail

ports=(${REDIS_CLUSTER_PORTS:-7001 7002 7003})
dir=/tmp/stockgate-redis-cluster

cluster_ok() {
  for port in "${ports[@]}"; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
  # Every node must see all the masters (a leftover node of another cluster would not).
  [ "$(redis-cli -p "${ports[0]}" cluster nodes 2>/dev/null | grep -c master)" -eq "${#ports[@]}" ]
}

start() {
  if cluster_ok; then
    echo "redis cluster already up on ${ports[*]}"
    return 0
  fi
  stop quiet
  for port in "${ports[@]}"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
      --cluster-node-timeout 5000 --save "" --appendonly no \
      --dir "$dir/$port" --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$port" ping >/dev/null || { echo "redis node $port did not start (see $dir/$port/redis.log)" >&2; exit 1; }
  done
  addrs=(); for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  for _ in $(seq 100); do cluster_ok && break; sleep 0.1; done
  cluster_ok || { echo "redis cluster on ${ports[*]} did not reach cluster_state:ok" >&2; exit 1; }
  echo "redis cluster up on ${ports[*]}"
}

stop() {
  for port in "${ports[@]}"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
  [ "${1:-}" = quiet ] || echo "redis cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
