#!/usr/bin/env bash
# The README's main command after fetch-assets: the whole pipeline on the
# demo defaults (real all-MiniLM-L6-v2, polarity sentences), each step a
# command a user can run alone. A fresh run directory per call.
#   finetune -> prune (soft + hard stage) -> export -> secure-eval -> two-party run
set -euo pipefail
cd "$(dirname "$0")/.."
# CIPHERPRUNE=path runs that binary instead of building this checkout's.
bin=${CIPHERPRUNE:-target/release/cipherprune}
[[ -n ${CIPHERPRUNE:-} ]] || cargo build --release --quiet
run=${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}
echo "== demo run directory: $run"
echo "== 1/5 fine-tune (configs/demo.yaml)"
$bin finetune --config configs/demo.yaml --out "$run/finetune"
echo "== 2/5 learn thresholds (configs/prune-demo.yaml)"
$bin prune --config configs/prune-demo.yaml --checkpoint "$run/finetune" --out "$run/pruned"
echo "== 3/5 export thresholds"
$bin export --checkpoint "$run/pruned" --out "$run/thresholds.yaml"
echo "== 4/5 secure evaluation: float simulation vs fixed-point engine (ring 37/12)"
$bin secure-eval --checkpoint "$run/pruned" --thresholds "$run/thresholds.yaml"
echo "== 5/5 the real two-party protocol on 16 dev sentences: bit-identical to the engine? bytes, rounds, LAN/WAN"
$bin secure-eval --checkpoint "$run/pruned" --thresholds "$run/thresholds.yaml" --backend shares --limit 16
echo "== plots: $run/finetune/loss.svg $run/pruned/loss.svg $run/pruned/tokens_kept.svg"
