#!/usr/bin/env bash
# The AMQP 1.0 broker of the outbox relay's broker-sink tests and the broker-restart fault run:
# Debian's RabbitMQ (3.10) with its rabbitmq_amqp1_0 plugin, on 127.0.0.1:5672 (guest/guest).
#   scripts/rabbitmq.sh start   # idempotent: installs rabbitmq-server if missing, starts the
#                               # node if it is not running, enables the AMQP 1.0 plugin
#   scripts/rabbitmq.sh clean   # deletes the queues earlier test runs left (sgtest-*, chaos-*)
# Tests reach it as AMQP_URL=amqp://127.0.0.1:5672 (AMQP_USER, AMQP_KEY default guest).
set -euo pipefail

start() {
  if ! command -v rabbitmqctl >/dev/null; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq rabbitmq-server
  fi
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "starting rabbitmq-server"
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
      systemctl start rabbitmq-server
    else
      # No systemd (containers): the node as a daemon of its own.
      su rabbitmq -s /bin/sh -c "rabbitmq-server -detached" 2>/dev/null || rabbitmq-server -detached
    fi
    for _ in $(seq 120); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  rabbitmqctl -q status >/dev/null || { echo "rabbitmq-server is not running" >&2; exit 1; }
  # A node stopped with `rabbitmqctl stop_app` (a broker-restart run cut short) runs no app.
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
  if ! rabbitmq-plugins -q list -e rabbitmq_amqp1_0 | grep -q rabbitmq_amqp1_0; then
    echo "enabling rabbitmq_amqp1_0"
    rabbitmq-plugins -q enable rabbitmq_amqp1_0
  fi
  echo "rabbitmq up, AMQP 1.0 on 127.0.0.1:5672"
}

clean() {
  # rabbitmqctl reads stdin: keep it off the list being read.
  rabbitmqctl -q list_queues name | grep -E '^(sgtest|chaos)-' | while read -r queue; do
    rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null || true
  done
}

case "${1:-}" in
  start) start ;;
  clean) clean ;;
  *) echo "usage: $0 start|clean" >&2; exit 2 ;;
esac
