#!/usr/bin/env bash
# Reproduces docs/RESULTS.md "Table 2, rebuilt on real data" for SST-2, MRPC,
# STS-B, CoLA and RTE: the fine-tunes (scripts/glue-runs.sh), zero-shot
# thresholds on each fine-tuned model (where the frontier lies before
# training), one FLOPs-target pruning run per task
# (configs/prune-TASK-target.yaml) and the combined table. SST-2's pruned runs
# come from scripts/frontier.sh (the LengthDrop runs at 0.45 and 0.58). One job at a
# time (2 cores). Idempotent: finished runs are skipped, interrupted ones
# resume.
# Usage: scripts/table2.sh [GLUE_DIR] [TASK...]   (default ../shared/glue, rte mrpc stsb cola)
# CIPHERPRUNE=path runs that binary instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${1:-../shared/glue}; shift || true
tasks=("$@"); [[ $# -gt 0 ]] || tasks=(rte mrpc stsb cola)
bin=${CIPHERPRUNE:-target/release/cipherprune}
scripts/frontier.sh "$glue"          # builds the binary; SST-2's fine-tune and target-0.55 run
mkdir -p runs/table2/zero-shot
runs=(--run runs/glue/sst2-lengthdrop:runs/frontier/sweep-lengthdrop/target-0.45 --run runs/glue/sst2-lengthdrop:runs/frontier/sweep-ld-dev/target-0.58)
# prune OUT FLAGS...: a pruning run, skipped when finished, resumed when interrupted.
prune() {
  local out=$1; shift
  [[ -f $out/summary.json ]] && return
  local resume=(); [[ -d $out/checkpoints || -d $out/soft/checkpoints ]] && resume=(--resume)
  $bin prune "$@" --data-dir "$glue" --out "$out" -q "${resume[@]}"
}
for t in "${tasks[@]}"; do
  scripts/glue-runs.sh "$glue" "$t"
  # Zero-shot: LTP's ramp θ_l = X·l/L, X = c·n̄^-0.5 (p = 0.5 as in the
  # configs; n̄ the task's mean dev length).
  z=runs/table2/zero-shot/$t
  [[ -f $z-base.json ]] || { $bin simulate --checkpoint "runs/glue/$t" --data-dir "$glue" --no-prune --no-reduce --batched --json > "$z.tmp"; mv "$z.tmp" "$z-base.json"; }
  n=$(python3 -c "import json; print(json.load(open('$z-base.json'))['real_tokens'])")
  for c in 1 1.5 2 3; do
    f=$z-p0.5-c$c.json
    [[ -f $f ]] && continue
    x=$(python3 -c "print($c * $n ** -0.5)")
    $bin simulate --checkpoint "runs/glue/$t" --data-dir "$glue" --theta-ramp "$x" --exponent 0.5 --batched --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
  # Threshold learning at the task's FLOPs target.
  out=runs/table2/$t
  prune "$out" --config "configs/prune-$t-target.yaml"
  runs+=(--run "runs/glue/$t:$out")
done

# Table 2 (docs/RESULTS.md, README): one fine-tuned and one pruned run per task.
$bin table "${runs[@]}" --out runs/table2/table2.md -q
