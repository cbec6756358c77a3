#!/usr/bin/env bash
# scripts/api-conformance.sh — the live API checked against openapi.yaml by schemathesis (a
# property-based API tester): every documented operation with generated valid and invalid
# inputs, all checks (schemathesis.toml), the stateful phase included (reserve → confirm →
# cancel by the spec's links), once with a buyer token and once with an ops token, against
# `stockgate all-in-one` on its embedded default (in-memory store, SQLite) on a free loopback
# port. A failed check fails the run.
# Called by scripts/test.sh. Installs schemathesis into .venv-schemathesis when missing.
#
# Usage: scripts/api-conformance.sh [path/to/stockgate] [extra schemathesis args]
# Env: MAX_EXAMPLES=40 (per operation and phase)  SEED (schemathesis --seed, to replay a run)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/stockgate}"
shift || true
[ -x "$BIN" ] || { echo "api-conformance: no stockgate binary at $BIN (cargo build --bin stockgate)" >&2; exit 1; }
SCHEMATHESIS_VERSION=4.32.5
VENV="$ROOT/.venv-schemathesis"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "api-conformance: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# Self-contained like loadtests/smoke: no STOCKGATE_* override from the caller applies.
for var in $(env | sed -n 's/^\(STOCKGATE_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done

WORK="$(mktemp -d /tmp/stockgate-api.XXXXXX)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The embedded default, on a free port and a temporary data dir: no rate-limit rules, dev
# sign-in on (as `stockgate all-in-one` without a file serves it), so /dev/token is tested too.
cat >"$WORK/api.toml" <<EOF_CONF
data_dir = "$WORK/data"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
grace_period_secs = 1
shutdown_timeout_secs = 1
[web]
dev_token = true
EOF_CONF
RUST_LOG="${RUST_LOG:-warn}" "$BIN" --config "$WORK/api.toml" all-in-one >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER=$!
BASE=""
for _ in $(seq 300); do
  BASE="$(sed -n 's#^stockgate is running on \(http://[^ ]*\)$#\1#p' "$WORK/server.out")"
  [ -n "$BASE" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.err" >&2; echo "api-conformance: all-in-one exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$BASE" ] || { echo "api-conformance: all-in-one did not start" >&2; exit 1; }
for _ in $(seq 100); do curl -sf -o /dev/null "$BASE/readyz" && break; sleep 0.1; done

BUYER="$("$BIN" --config "$WORK/api.toml" token --sub api-buyer 2>/dev/null)"
OPS="$("$BIN" --config "$WORK/api.toml" token --sub api-ops --role ops 2>/dev/null)"

status=0
for who in buyer ops; do
  token="$BUYER"; [ "$who" = ops ] && token="$OPS"
  echo "api-conformance: schemathesis as $who against $BASE" >&2
  if ! "$VENV/bin/schemathesis" --config-file "$ROOT/schemathesis.toml" --no-color run "$ROOT/openapi.yaml" --url "$BASE" \
      -H "Authorization: Bearer $token" \
      --max-examples "${MAX_EXAMPLES:-40}" ${SEED:+--seed "$SEED"} \
      "$@" >"$WORK/$who.log" 2>&1; then
    cat "$WORK/$who.log" >&2
    echo "api-conformance: schemathesis as $who found failures (log above)" >&2
    status=1
  else
    tail -n 15 "$WORK/$who.log" >&2
  fi
done
exit "$status"
