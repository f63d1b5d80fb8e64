#!/usr/bin/env bash
# What each part of a call holds on the heap: `caly serve` built with `--features dhat-heap`
# (dhat counts every allocation), CALLS concurrent Realtime calls from `caly simulate` for
# SECONDS (the model and the store played in the generator's process, the busy script, as
# scripts/load.sh does), then SIGTERM; dhat writes dhat-heap.json and scripts/dhat_summary.py groups the bytes
# live at the heap's peak by what allocated them, per call.
# Usage: scripts/heap_profile.sh [CALLS] [SECONDS]   (LOAD_PIPELINE as for load.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-100}"; seconds="${2:-20}"
port="${LOAD_PORT:-18191}"; model_port="${LOAD_MODEL_PORT:-18192}"
pipeline="${LOAD_PIPELINE:-pipelines/default.toml}"
# Symbols for dhat's backtraces.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q --features dhat-heap
bin="${CARGO_TARGET_DIR:-target}/release/caly"
dir="$(mktemp -d)"
store_port="${LOAD_STORE_PORT:-18193}"
OPENAI_REALTIME_URL="ws://127.0.0.1:$model_port/v1/realtime" OPENAI_API_KEY=sk-simulated \
  SHOPIFY_API_URL="http://127.0.0.1:$store_port/admin/api/2026-07/graphql.json" \
  SHOPIFY_ACCESS_TOKEN=shpat_demo_load \
  RUST_LOG=warn "$bin" serve --pipeline "$pipeline" --bind 127.0.0.1 --port "$port" \
  --max-calls 5000 --database-url "sqlite://$dir/caly.db" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 200); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$bin" simulate --url "ws://127.0.0.1:$port/v1/exotel/stream?sample-rate=8000" --calls "$calls" \
  --duration "$seconds" --stagger 2 --no-probes --model-port "$model_port" \
  --store-port "$store_port" --store-token shpat_demo_load --model-script busy >/dev/null
kill -TERM "$server"; wait "$server" || true
mv dhat-heap.json "$dir/"   # where dhat wrote it: the working directory
python3 scripts/dhat_summary.py "$dir/dhat-heap.json" "$calls" --sites
if [ -n "${KEEP_PROFILE:-}" ]; then cp "$dir/dhat-heap.json" "$KEEP_PROFILE"; fi
# Rebuild the plain release binary so the next load.sh or serve is not the profiling one.
cargo build --release -q
