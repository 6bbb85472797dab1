#!/usr/bin/env bash
# Reproduces the GLUE fine-tuning numbers quoted in docs/RESULTS.md: one run
# directory per recipe under runs/glue/, each ending with dev.json from `eval`.
# Idempotent: a finished run is skipped, an interrupted one resumes.
# Usage: scripts/glue-runs.sh [GLUE_DIR] [NAME...]   (default ../shared/glue, all)
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${1:-../shared/glue}; shift || true
# CIPHERPRUNE=path runs that binary instead of building this checkout's.
bin=${CIPHERPRUNE:-target/release/cipherprune}
[[ -n ${CIPHERPRUNE:-} ]] || cargo build --release --quiet

# name | config | extra flags
recipes=(
  "sst2|configs/sst2.yaml|"
  "mrpc|configs/mrpc.yaml|"
  "sst2-reference|configs/sst2.yaml|--lr 2e-5 --eval-every 0"
  "rte|configs/rte.yaml|"
  "stsb|configs/stsb.yaml|"
  "cola|configs/cola.yaml|"
)
want=" $* "
for r in "${recipes[@]}"; do
  IFS='|' read -r name config extra <<<"$r"
  [[ $# -gt 0 && $want != *" $name "* ]] && continue
  out=runs/glue/$name
  if [[ -f $out/dev.json ]]; then echo "$name: done ($out/dev.json)"; continue; fi
  resume=""; [[ -d $out/checkpoints ]] && resume="--resume"
  # shellcheck disable=SC2086
  /usr/bin/time -f "$name: %e s wall" $bin finetune --config "$config" --data-dir "$glue" --out "$out" $extra $resume
  task=$(sed -n 's/^task: //p' "$config")
  $bin eval --checkpoint "$out" --task "$task" --data-dir "$glue" --json > "$out/dev.json.tmp"
  mv "$out/dev.json.tmp" "$out/dev.json"
  cat "$out/dev.json"
done
