#!/usr/bin/env bash
# Load test on this machine: `caly serve` with the tone bot, and `caly simulate` acting as
# Exotel with N concurrent real-time calls. Usage: scripts/load.sh CALLS [SECONDS] [extra simulate flags]
# Builds in release first. Prints the simulator's report (JSON with --json).
# LOAD_PIPELINE=pipelines/default.toml runs the Realtime path (the built-in simulator answers).
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-100}"; seconds="${2:-30}"; shift $(( $# >= 2 ? 2 : $# )) || true
port="${LOAD_PORT:-18181}"
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/caly"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
dir="$(mktemp -d)"
RUST_LOG=warn "$bin" serve --pipeline "${LOAD_PIPELINE:-pipelines/tone_bot.toml}" --bind 127.0.0.1 --port "$port" --max-calls 5000 \
  --database-url "sqlite://$dir/caly.db" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$bin" simulate --url "ws://127.0.0.1:$port/v1/exotel/stream?sample-rate=8000" \
  --calls "$calls" --duration "$seconds" --stagger "$(( calls / 100 + 5 ))" \
  --server-pid "$server" "$@"
