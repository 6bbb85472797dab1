#!/usr/bin/env bash
# Reproduces docs/RESULTS.md "SST-2 frontier": zero-shot thresholds for
# p = 1, 0.5 and 0 on the fine-tuned SST-2 model and the FLOPs-target runs
# (scripts/table2.sh builds Table 2 from them and the other tasks). One job
# at a time (2 cores). Idempotent: finished runs are skipped, unfinished resume.
# Needs ../shared/glue (or pass a GLUE root); fine-tunes what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${1:-../shared/glue}
# CIPHERPRUNE=path runs that binary instead of building this checkout's.
bin=${CIPHERPRUNE:-target/release/cipherprune}
[[ -n ${CIPHERPRUNE:-} ]] || cargo build --release --quiet
mkdir -p runs/frontier
scripts/glue-runs.sh "$glue" sst2

# Zero-shot: hard θ on LTP's ramp θ_l = X·l/L on the fine-tuned model, no
# retraining, for three length exponents; X in units of the mean score n̄^-p
# (n̄ ≈ 25 on SST-2 dev).
for p in 1 0.5 0; do
  for c in 1 1.5 2 2.5 3; do
    f=runs/frontier/zero-shot-p$p-c$c.json
    [[ -f $f ]] && continue
    x=$(python3 -c "print($c * 25 ** -$p)")
    $bin simulate --checkpoint runs/glue/sst2 --data-dir "$glue" --theta-ramp "$x" --exponent "$p" --batched --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
done

# FLOPs targets (configs/prune-sst2-target.yaml: p = 0.5, a Lagrange
# multiplier in both stages), each point also with the baselines in one
# picture: runs/frontier/sweep-p05/sweep.svg.
$bin sweep --config configs/prune-sst2-target.yaml --data-dir "$glue" --targets 0.55,0.45 --out runs/frontier/sweep-p05 -q
