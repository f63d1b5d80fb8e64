#!/usr/bin/env bash
# Load test on this machine: `caly serve` and `caly simulate` acting as Exotel with N
# concurrent real-time calls. Usage: scripts/load.sh CALLS [SECONDS] [extra simulate flags]
# Builds in release first. Prints the simulator's report (JSON with --json): the server's CPU
# and RSS per call are the server process's alone.
#
# Honest numbers: the load generator must not share the server's core. With two or more CPUs
# the server is pinned to LOAD_SERVER_CPUS (default: CPU 0) and `caly simulate` to
# LOAD_CLIENT_CPUS (default: every other CPU), with `taskset`.
#
# LOAD_PIPELINE=pipelines/default.toml runs the Realtime path. The model is then played by the
# offline Realtime simulator hosted by `caly simulate --model-port` — in the generator's
# process, on the generator's CPUs — and the server talks to it as it would to OpenAI
# (OPENAI_REALTIME_URL, a dummy OPENAI_API_KEY). Without a store configured the agents answer
# "the store is not connected"; the conversation has the same shape (tool call, answer).
# The generator also hosts the demo store (`caly simulate --store-port`; the server reaches it
# through SHOPIFY_API_URL), so the model's tool calls are answered and a call is as busy as a
# real one: the simulator's `busy` script, eight caller turns with five store lookups and no
# goodbye, walked again for as long as the call lasts.
# LOAD_STORE=none leaves the store out (the agents then answer "the store is not connected").
# LOAD_MODEL=builtin keeps the server's built-in simulator (and demo store) instead: their cost
# then counts as the server's, as in the first measurements.
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-100}"; seconds="${2:-30}"; shift $(( $# >= 2 ? 2 : $# )) || true
port="${LOAD_PORT:-18181}"
model_port="${LOAD_MODEL_PORT:-18182}"
store_port="${LOAD_STORE_PORT:-18183}"
pipeline="${LOAD_PIPELINE:-pipelines/tone_bot.toml}"
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/caly"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

server_pin=(); client_pin=()
cpus="$(nproc)"
if [ "$cpus" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  server_cpus="${LOAD_SERVER_CPUS:-0}"
  client_cpus="${LOAD_CLIENT_CPUS:-1-$((cpus - 1))}"
  server_pin=(taskset -c "$server_cpus"); client_pin=(taskset -c "$client_cpus")
  echo "load: server on CPU $server_cpus, load generator on CPU $client_cpus" >&2
else
  echo "load: one CPU (or no taskset): the server and the load generator share it" >&2
fi

model_env=(); model_flags=()
if grep -q 'kind = "realtime"' "$pipeline" && [ "${LOAD_MODEL:-external}" != builtin ]; then
  model_env=(OPENAI_REALTIME_URL="ws://127.0.0.1:$model_port/v1/realtime" OPENAI_API_KEY=sk-simulated)
  model_flags=(--model-port "$model_port")
  echo "load: the model is the Realtime simulator in the load generator's process (:$model_port)" >&2
  if [ "${LOAD_STORE:-demo}" != none ]; then
    model_env+=(SHOPIFY_API_URL="http://127.0.0.1:$store_port/admin/api/2026-07/graphql.json"
                SHOPIFY_ACCESS_TOKEN=shpat_demo_load)
    model_flags+=(--store-port "$store_port" --store-token shpat_demo_load --model-script busy)
    echo "load: the store is the demo store in the load generator's process (:$store_port)" >&2
  fi
fi

dir="$(mktemp -d)"
env ${model_env[@]+"${model_env[@]}"} RUST_LOG=warn ${server_pin[@]+"${server_pin[@]}"} "$bin" serve \
  --pipeline "$pipeline" --bind 127.0.0.1 --port "$port" --max-calls 5000 \
  --database-url "sqlite://$dir/caly.db" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
${client_pin[@]+"${client_pin[@]}"} "$bin" simulate --url "ws://127.0.0.1:$port/v1/exotel/stream?sample-rate=8000" \
  --calls "$calls" --duration "$seconds" --stagger "$(( calls / 100 + 5 ))" \
  --server-pid "$server" ${model_flags[@]+"${model_flags[@]}"} "$@"
