#!/usr/bin/env bash
# scripts/browser-tests.sh — the storefront and ops console in a real browser: Playwright
# (web/package.json, lock file committed) driving Debian's headless chromium against
# `stockgate all-in-one` on real Redis and PostgreSQL. Called from scripts/test.sh.
#
# Starts all-in-one (the given binary, default the debug build) on a free loopback port with
# its own Redis key prefix, its own PostgreSQL schema (dropped afterwards), a 6 s hold TTL and a
# tight rate-limit rule for the 429 test; runs web/tests/*.spec.js; stops everything. Fails
# loudly when chromium, Node.js, Redis or PostgreSQL is missing. With UPDATE_SCREENSHOTS=1 the
# screenshots of the storefront and the console are written to docs/screenshots/.
#
# Usage: scripts/browser-tests.sh [path/to/stockgate [playwright args...]]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/stockgate}"
[ "$#" -gt 0 ] && shift
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
fail() { echo "browser-tests: $*" >&2; exit 1; }

[ -x "$BIN" ] || fail "no stockgate binary at $BIN (cargo build --bin stockgate)"
command -v node >/dev/null && command -v npm >/dev/null || fail "node and npm are needed (apt-get install nodejs npm)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "browser-tests: installing Debian's chromium" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium
fi
[ -x "$CHROMIUM" ] || fail "no chromium at $CHROMIUM"
if [ ! -d "$ROOT/web/node_modules/@playwright/test" ]; then
  # The browser comes from Debian: never let Playwright download one.
  (cd "$ROOT/web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || fail "redis is not reachable at $REDIS_URL"
psql "$DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1 || fail "postgres is not reachable at $DATABASE_URL"

# The server is self-contained: no STOCKGATE_* override from the caller's environment applies.
for var in $(env | sed -n 's/^\(STOCKGATE_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done

RUN_ID="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
PREFIX="sgtest-web-$RUN_ID"
# The sgtest_ prefix lets scripts/test.sh drop it should this run die before its cleanup.
SCHEMA="sgtest_web_$RUN_ID"
WORK="$(mktemp -d /tmp/stockgate-web.XXXXXX)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  psql "$DATABASE_URL" -qAtc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql "$DATABASE_URL" -qAtc "CREATE SCHEMA $SCHEMA" >/dev/null
separator='?'; case "$DATABASE_URL" in *\?*) separator='&';; esac

cat >"$WORK/ratelimits.toml" <<TOML
# Tight on purpose: a buyer's second reservation of one SKU within 2 s gets 429 (the storefront
# must retry it after Retry-After).
[[rule]]
name = "reserve-tight-per-buyer-sku"
method = "POST"
path = "/api/v1/reservations"
key = ["sub", "sku"]
rate = 1
period_secs = 2
burst = 1

[[rule]]
name = "stock-poll-per-ip"
method = "GET"
path = "/api/v1/stock/{sku}"
key = ["ip", "sku"]
rate = 600
period_secs = 60
burst = 30
shadow = true
TOML

cat >"$WORK/stockgate.toml" <<TOML
data_dir = "$WORK/data"
redis_url = "$REDIS_URL"
database_url = "$DATABASE_URL${separator}options[search_path]=$SCHEMA"
redis_key_prefix = "$PREFIX"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
grace_period_secs = 1
shutdown_timeout_secs = 1
[reservations]
hold_ttl_secs = 6
[ratelimit]
rules_file = "$WORK/ratelimits.toml"
[web]
storefront = true
dev_token = true
[settlement]
redis_key_prefix = "$PREFIX-settlement"
[settlement.outbox]
stream = "$PREFIX:events"
TOML

RUST_LOG="${RUST_LOG:-warn}" "$BIN" --config "$WORK/stockgate.toml" all-in-one >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER=$!
BASE=""
for _ in $(seq 300); do
  BASE="$(sed -n 's#^stockgate is running on \(http://[^ ]*\)$#\1#p' "$WORK/server.out")"
  [ -n "$BASE" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.err" >&2; fail "all-in-one exited"; }
  sleep 0.1
done
[ -n "$BASE" ] || fail "all-in-one did not start"
for _ in $(seq 100); do curl -sf -o /dev/null "$BASE/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "$BASE/readyz" || fail "all-in-one is not ready at $BASE"

echo "browser-tests: playwright against $BASE (chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}'))" >&2
cd "$ROOT/web"
# The screenshots go to the temp dir; UPDATE_SCREENSHOTS=1 writes the ones the README shows.
SCREENSHOT_DIR="$WORK/screenshots"
[ "${UPDATE_SCREENSHOTS:-0}" = 1 ] && SCREENSHOT_DIR="$ROOT/docs/screenshots"
if ! BASE_URL="$BASE" CHROMIUM="$CHROMIUM" SCREENSHOT_DIR="$SCREENSHOT_DIR" \
  npx --no-install playwright test "$@"; then
  echo "--- server log (last 40 lines)" >&2
  tail -n 40 "$WORK/server.err" >&2
  fail "browser tests failed against $BASE"
fi
