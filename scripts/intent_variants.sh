#!/usr/bin/env bash
# The README's "combination" table: each input set trained with `caly intent train` (same data,
# same seed) into its own directory and scored on the held-out batches.
# Usage: scripts/intent_variants.sh [path/to/caly]   (default: the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
caly="${1:-${CARGO_TARGET_DIR:-target}/release/caly}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
row() {
    local name="$1" dir="$2"
    "$caly" intent eval --data "$dir" data/intent/heldout/*.jsonl \
        | awk -v name="$name" -v cv="$3" '/intent accuracy/{acc=$4} /^affirm /{ap=$2}
              END{printf "%-44s left-out-batch %-7s held-out %s  affirm precision %s\n", name, cv, acc, ap}'
}
"$caly" intent eval --rules-only data/intent/heldout/*.jsonl \
    | awk '/intent accuracy/{acc=$4} /^affirm /{ap=$2}
           END{printf "%-44s left-out-batch %-7s held-out %s  affirm precision %s\n", "rules alone (--rules-only)", "-", acc, ap}'
for flags in "--with-rules --no-cues" "--no-cues" "" "--with-rules"; do
    dir="$work/v${flags// /}"
    mkdir -p "$dir"
    cp data/intent/*.toml "$dir/"
    # shellcheck disable=SC2086
    cv=$("$caly" intent train $flags --out "$dir/model.bin" | awk '/left-out-batch accuracy/{print $10; exit}')
    row "train ${flags:-(defaults: the shipped model)}" "$dir" "${cv%;}"
done
