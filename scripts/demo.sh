#!/usr/bin/env bash
# The README's main command after fetch-assets: the whole pipeline on the
# demo defaults (real all-MiniLM-L6-v2, polarity sentences), each step a
# command a user can run alone. A fresh run directory per call.
#   finetune -> prune (soft + hard stage) -> export -> secure-eval
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/cipherprune
run=${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}
echo "== demo run directory: $run"
echo "== 1/4 fine-tune (configs/demo.yaml)"
$bin finetune --config configs/demo.yaml --out "$run/finetune"
echo "== 2/4 learn thresholds (configs/prune-demo.yaml)"
$bin prune --config configs/prune-demo.yaml --checkpoint "$run/finetune" --out "$run/pruned"
echo "== 3/4 export thresholds"
$bin export --checkpoint "$run/pruned" --out "$run/thresholds.yaml"
echo "== 4/4 secure evaluation: float simulation vs fixed-point engine (ring 37/12)"
$bin secure-eval --checkpoint "$run/pruned" --thresholds "$run/thresholds.yaml"
echo "== plots: $run/finetune/loss.svg $run/pruned/loss.svg $run/pruned/tokens_kept.svg"
