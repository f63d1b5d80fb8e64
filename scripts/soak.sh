#!/usr/bin/env bash
# Soak on this machine: release `caly serve` (tone bot, call records in a fresh SQLite file) and
# `caly simulate --sequential N --calls M` acting as Exotel: N calls one after another, then M
# at once. Prints the server's resident memory and alive tasks (read from its /metrics with the
# server idle) through the run, and the RSS slope per call.
# Usage: scripts/soak.sh [N=10000] [M=500] [extra simulate flags, e.g. --json]; SOAK_BURSTS
# (default 3) batches of M, to tell memory kept for reuse (flat) from a leak (growing).
set -euo pipefail
cd "$(dirname "$0")/.."
sequential="${1:-10000}"; concurrent="${2:-500}"; shift $(( $# >= 2 ? 2 : $# )) || true
port="${SOAK_PORT:-18282}"
cargo build --release -q --bin caly
bin="${CARGO_TARGET_DIR:-target}/release/caly"
dir="$(mktemp -d)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=warn "$bin" serve --pipeline pipelines/tone_bot.toml --bind 127.0.0.1 --port "$port" \
  --max-calls 5000 --database-url "${SOAK_DATABASE_URL:-sqlite://$dir/caly.db}" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$bin" simulate --url "ws://127.0.0.1:$port/v1/exotel/stream?sample-rate=8000" \
  --sequential "$sequential" --calls "$concurrent" --duration 0.1 --chunk-ms 20 \
  --stagger 2 --no-probes --bursts "${SOAK_BURSTS:-3}" "$@"
