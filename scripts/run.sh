#!/usr/bin/env bash
# Runs stockgate. With no arguments: the embedded default (`all-in-one`: gateway, settlement
# and storefront in one process, in-memory reservation store, SQLite file, demo products) on
# http://127.0.0.1:8080 — no Redis or PostgreSQL needed. Any arguments are passed to the
# `stockgate` binary instead, e.g. `scripts/run.sh token --sub alice`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pingora's zlib-ng build needs cmake; a C compiler builds the bundled SQLite.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(build-essential)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

if [ "$#" -eq 0 ]; then set -- all-in-one; fi
exec cargo run --quiet --release --bin stockgate -- "$@"
