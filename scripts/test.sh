#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine or this one:
#   installs what is missing (Redis, PostgreSQL, RabbitMQ, cmake), starts Redis, PostgreSQL and
#   RabbitMQ (with its AMQP 1.0 plugin) if they are not running, then runs the format check, clippy with -D warnings, and every test
#   against the real services.
# Tests read REDIS_URL and DATABASE_URL; each test uses its own key prefix / schema, so they
# run in parallel. A test that needs a service fails (never skips) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
# The AMQP 1.0 broker of the outbox relay's broker sink tests (testkit/src/broker.rs).
export AMQP_URL="${AMQP_URL:-amqp://127.0.0.1:5672}"

log() { printf '\n== %s\n' "$*"; }

# --- packages -----------------------------------------------------------------------------
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
command -v pg_ctlcluster >/dev/null || need_pkgs+=(postgresql)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
command -v cmake >/dev/null || need_pkgs+=(cmake)   # pingora's zlib-ng build
command -v cc >/dev/null || need_pkgs+=(build-essential)
command -v openssl >/dev/null || need_pkgs+=(openssl)   # the tls_* tests make a test CA
command -v curl >/dev/null || need_pkgs+=(curl)         # gateway/tests/tls.rs: curl --http2
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)   # gateway/tests/tls.rs: h2load
# The AMQP 1.0 broker (its amqp1_0 plugin ships with Debian's package, off until enabled).
command -v rabbitmqctl >/dev/null || need_pkgs+=(rabbitmq-server)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}"
fi

# --- services -----------------------------------------------------------------------------
if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  log "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/stockgate-redis.log
  for _ in $(seq 50); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -u "$REDIS_URL" ping >/dev/null || { echo "redis is not reachable at $REDIS_URL" >&2; exit 1; }

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting postgresql"
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
fi
if ! psql "$DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster asks for a password over TCP and has no `test` database.
  log "preparing the postgres role and the test database"
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  su postgres -c "createdb test" 2>/dev/null || true
fi
psql "$DATABASE_URL" -qAtc 'select 1' >/dev/null || { echo "postgres is not reachable at $DATABASE_URL" >&2; exit 1; }

# RabbitMQ with its AMQP 1.0 plugin for the broker tests (installed, started, enabled; all
# idempotent), and the queues earlier runs left deleted.
log "rabbitmq (AMQP 1.0)"
scripts/rabbitmq.sh start
scripts/rabbitmq.sh clean

# Tests and benches each make a scratch schema (backend-adapters/src/sql/scratch.rs) and leave
# it; drop what earlier runs left before this one starts.
log "dropping scratch schemas of earlier runs"
# One DROP per schema, each its own transaction: one transaction dropping hundreds of schemas
# runs out of lock slots.
psql "$DATABASE_URL" -qAtc \
  "SELECT format('DROP SCHEMA %I CASCADE;', nspname) FROM pg_namespace WHERE nspname LIKE 'sgtest\_%'" \
  | PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 >/dev/null

# A local 3-master Redis Cluster (loopback 7001-7003) for the cluster_* tests.
log "redis cluster"
scripts/redis-cluster.sh start
export REDIS_CLUSTER_URL="${REDIS_CLUSTER_URL:-redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003}"

log "deploy/ checks"
scripts/check-deploy.sh

# --- checks and tests ---------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc

# --- k6 smoke run -------------------------------------------------------------------------
# A few seconds of every loadtests/*.js against `stockgate all-in-one` (debug build, free
# loopback port, temp data dir); a failed threshold fails the test command. Installs k6 if missing.
log "k6 smoke (loadtests/smoke)"
cargo build --quiet --bin stockgate
loadtests/smoke "${CARGO_TARGET_DIR:-target}/debug/stockgate"

# --- API conformance ----------------------------------------------------------------------
# schemathesis checks the live API (embedded default, buyer and ops tokens) against
# openapi.yaml: every status, header and request rule the spec states, stateful phase included.
log "API conformance (schemathesis)"
scripts/api-conformance.sh "${CARGO_TARGET_DIR:-target}/debug/stockgate"

# --- browser tests ------------------------------------------------------------------------
# The storefront and ops console in Debian's headless chromium (Playwright, web/tests) against
# `stockgate all-in-one` on Redis and PostgreSQL. Installs chromium and web/node_modules if missing.
log "browser tests"
scripts/browser-tests.sh "${CARGO_TARGET_DIR:-target}/debug/stockgate"
