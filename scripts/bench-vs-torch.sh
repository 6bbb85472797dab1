#!/usr/bin/env bash
# The training step of `cipherprune bench` against the same step in PyTorch +
# transformers (../shared/bench/torch_step.py), as whole processes, in turn:
# ours, ours with soft masks, PyTorch, ours, ... so that a machine whose speed
# drifts (other jobs, thermal limits) slows all three alike. Per sequence
# length it prints the medians of every part of a step, the whole process's
# wall time and peak RSS (from /usr/bin/time), and the ratio ours / PyTorch
# taken run by run.
#
# Usage: scripts/bench-vs-torch.sh MODEL_DIR
#   RUNS=5           runs of each command per sequence length
#   SEQ_LENS="64 128"
#   STEPS=5          timed steps per run (after one warm-up step)
#   BATCH=32
#   TORCH_VENV=.venv-torch   a virtual environment with torch, transformers
#                    and safetensors (set up as torch_step.py's docstring says:
#                    python3 -m venv .venv-torch &&
#                    .venv-torch/bin/pip install torch transformers safetensors)
#   TORCH_STEP=../shared/bench/torch_step.py
#   CIPHERPRUNE=target/release/cipherprune
#   SOFT=1           also time `--soft-masks` (0 to skip)
#   THREADS=0        threads for both (0: each picks its own, all cores). On a
#                    machine that other jobs share, THREADS=1 compares the work
#                    done rather than who copes better with oversubscription
#                    (PyTorch's OpenMP threads spin and lose far more).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:?usage: scripts/bench-vs-torch.sh MODEL_DIR}"
: "${RUNS:=5}" "${SEQ_LENS:=64 128}" "${STEPS:=5}" "${BATCH:=32}" "${SOFT:=1}" "${THREADS:=0}"
: "${TORCH_VENV:=$ROOT/.venv-torch}" "${TORCH_STEP:=$ROOT/../shared/bench/torch_step.py}"
: "${CIPHERPRUNE:=$ROOT/target/release/cipherprune}"
PY="$TORCH_VENV/bin/python"

[[ -f "$MODEL/config.json" && -f "$MODEL/model.safetensors" ]] || { echo "no config.json + model.safetensors in $MODEL" >&2; exit 2; }
[[ -x "$PY" ]] || { echo "no Python at $PY: set TORCH_VENV (see the header of this script)" >&2; exit 2; }
[[ -f "$TORCH_STEP" ]] || { echo "no $TORCH_STEP: set TORCH_STEP" >&2; exit 2; }
[[ -x "$CIPHERPRUNE" ]] || { echo "no $CIPHERPRUNE: cargo build --release, or set CIPHERPRUNE" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (GNU time) for whole-process wall time and peak RSS" >&2; exit 2; }

LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT

# One run: the command's JSON line, then "wall_s peak_kib" from GNU time.
run_one() { # KIND SEQ OUTFILE
    local kind="$1" seq="$2" out="$3" cmd
    case "$kind" in
    ours) cmd=(env "${ours_env[@]}" "$CIPHERPRUNE" bench --model "$MODEL" --batch-size "$BATCH" --seq-len "$seq" --steps "$STEPS" --json) ;;
    soft) cmd=(env "${ours_env[@]}" "$CIPHERPRUNE" bench --model "$MODEL" --batch-size "$BATCH" --seq-len "$seq" --steps "$STEPS" --json --soft-masks) ;;
    torch) cmd=("$PY" "$TORCH_STEP" --model "$MODEL" --batch-size "$BATCH" --seq-len "$seq" --steps "$STEPS" --threads "$THREADS") ;;
    esac
    /usr/bin/time -f "TIME %e %M" -o "$out.time" "${cmd[@]}" 2>"$out.err" | grep '^{' | tail -1 >"$out.json" \
        || { echo "$kind at $seq tokens failed:" >&2; tail -5 "$out.err" "$out.time" >&2; exit 1; }
}

ours_env=()
[[ "$THREADS" != 0 ]] && ours_env=("RAYON_NUM_THREADS=$THREADS")
kinds=(ours torch)
[[ "$SOFT" == 1 ]] && kinds=(ours soft torch)
for seq in $SEQ_LENS; do
    for ((r = 1; r <= RUNS; r++)); do
        for k in "${kinds[@]}"; do
            echo "  seq $seq run $r/$RUNS: $k" >&2
            run_one "$k" "$seq" "$LOG/$k-$seq-$r"
        done
    done
done

"$PY" - "$LOG" "$RUNS" "$SEQ_LENS" "${kinds[@]}" <<'EOF'
import json, statistics, sys
log, runs, seqs, kinds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
med = statistics.median
def load(k, s, r):
    j = json.load(open(f"{log}/{k}-{s}-{r}.json"))
    wall, kib = open(f"{log}/{k}-{s}-{r}.time").read().split()[-2:]
    j["wall"], j["rss_gib"] = float(wall), int(kib) / 2**20
    return j
names = {"ours": "ours", "soft": "ours, soft masks", "torch": "PyTorch"}
for s in seqs:
    rows = {k: [load(k, s, r) for r in range(1, runs + 1)] for k in kinds}
    b = rows["torch"][0]["batch_size"]
    print(f"\nbatch {b} x {s} tokens, medians of {runs} alternating runs")
    print(f"| {'':18} | step s | forward | backward | optimiser | process wall s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for k in kinds:
        m = lambda key: med(x[key] for x in rows[k])
        print(f"| {names[k]:18} | {m('step_s'):.3f} | {m('forward_s'):.3f} | {m('backward_s'):.3f} | {m('optimizer_s'):.3f} | {m('wall'):.1f} | {m('rss_gib'):.2f} |")
    for k in kinds:
        if k == "torch":
            continue
        step = [a["step_s"] / t["step_s"] for a, t in zip(rows[k], rows["torch"])]
        rss = [a["rss_gib"] / t["rss_gib"] for a, t in zip(rows[k], rows["torch"])]
        print(f"{names[k]} / PyTorch: step {med(step):.2f}x (runs {min(step):.2f}-{max(step):.2f}), peak RSS {med(rss):.2f}x")
    if "soft" in kinds:
        sp = [a["step_s"] / o["step_s"] for a, o in zip(rows["soft"], rows["ours"])]
        print(f"soft masks / plain: step {med(sp):.2f}x (runs {min(sp):.2f}-{max(sp):.2f})")
EOF
