#!/usr/bin/env bash
# Caly's front half against Pipecat's on the same Exotel recording, in one run (not part of
# .ci/run: it installs Pipecat 1.14 from PyPI into its own venv). Usage:
#   [CHUNK_MS=20] scripts/pipecat_compare.sh [REPEAT] [RUNS]
# See scripts/pipecat_compare.py for what each side runs and how its CPU is counted.
set -euo pipefail
cd "$(dirname "$0")/.."
PIPECAT_VERSION=1.14.0
VENV="${PIPECAT_VENV:-$HOME/.cache/caly/pipecat-$PIPECAT_VERSION}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pipecat" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "pipecat-ai==$PIPECAT_VERSION"
fi
cargo build --release -q --bin caly
bin="${CARGO_TARGET_DIR:-target}/release/caly"
# One core for both, as a call would have.
pin=()
if command -v taskset >/dev/null 2>&1; then pin=(taskset -c 0); fi
${pin[@]+"${pin[@]}"} "$VENV/bin/python" scripts/pipecat_compare.py "$bin" fixtures/exotel/call_pcm16_8k.jsonl "${1:-100}" "${2:-3}"
