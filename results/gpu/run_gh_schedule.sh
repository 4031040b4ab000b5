#!/usr/bin/env bash
# Issue 12 item 7, one prepared script for a lent GPU: the GH experiment on a schedule the CPU cannot
# afford. The arms SimCLR, SimCLR + GH (estimated prior), SimCLR + GH (known prior) and SimCLR + GH
# (known prior, anchors aligned to the projections' clusters: --anchor_alignment kmeans) of seed(s)
# SEEDS on the fashion_mnist_lt preset (same split, class permutation and LR rule as the CPU
# experiment), but a full-width ResNet-18 (small-input stem), EPOCHS epochs of which the first half
# are the SimCLR warm-up, bf16 and batched views on the GPU. SimCLR + GH (estimated prior) trains
# each seed's warm-up and keeps it (checkpoints/warmup); as soon as it is kept, the other arms
# (FORKS) start their second stage from it, side by side with the source's (a 28x28 batch of 256
# leaves the GPU underused). The arms of a seed thus share their warm-up exactly, which separate
# GPU runs would not (GPU kernels need not be deterministic), and cost 2.5 runs, not 4.
# Then each encoder and the pixel floor are benchmarked (linear probe, kNN) and summarised with
# the paired GH - SimCLR table.
# Resumable: rerun with the same settings and finished runs are kept, interrupted ones resume from
# their latest checkpoint (the work folder stays on the machine while it is held).
# Usage (from the repository root): OUT=results/gpu bash results/gpu/run_gh_schedule.sh
# A CPU smoke test of the script itself: PYTHON=.venv/bin/python OUT=outputs/gpu_smoke EPOCHS=2 PRECISION=no \
#   THREADS=1 LINEAR_EPOCHS=2 WIDTH='{"channels": [8, 16, 32, 64]}' EXTRA='--max_steps 62' \
#   bash results/gpu/run_gh_schedule.sh
set -euo pipefail
OUT=${OUT:-results/gpu}
PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-120}
SEEDS=${SEEDS:-0}
THREADS=${THREADS:-4}           # CPU threads per run (four runs side by side)
WIDTH=${WIDTH:-'{}'}            # --backbone_kwargs; {} is timm's full-width resnet18
PRECISION=${PRECISION:-bf16}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-200}
EXTRA=${EXTRA:-}
SOURCE=simclr_gh                # trains each seed's warm-up
# start their second stage from it (space-separated arms of scripts/experiment.py)
read -r -a FORKS <<< "${FORKS:-simclr simclr_gh_known simclr_gh_known_aligned}"
RESULTS="$OUT/fashion_mnist_lt_${EPOCHS}ep"
WORK="outputs/gpu_experiment_${EPOCHS}ep"
mkdir -p "$RESULTS"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    | tee "$RESULTS/nvidia_smi.txt"

pretrain_args="--num_epochs $EPOCHS --gh_warmup_epochs $((EPOCHS / 2)) --mixed_precision $PRECISION"
pretrain_args+=" --view_pipeline batched --backbone_kwargs '$WIDTH' $EXTRA"
experiment=("$PYTHON" scripts/experiment.py --preset fashion_mnist_lt --work_dir "$WORK"
            --results_dir "$RESULTS" --linear_epochs "$LINEAR_EPOCHS" --extra "$pretrain_args")
start=$(date +%s)
"${experiment[@]}" --seeds "$SEEDS" --reuse --runs_only --threads "$THREADS" --arms "$SOURCE" \
    > "$RESULTS/$SOURCE.log" 2>&1 &
source_pid=$!
pids=("$source_pid")
for seed in ${SEEDS//,/ }; do
    # a source that stops before its warm-up is kept leaves the forks to train their own
    until [ -d "$WORK/${SOURCE}_seed$seed/checkpoints/warmup" ] || ! kill -0 "$source_pid" 2>/dev/null; do
        sleep 2
    done
    echo "seed $seed: warm-up kept after $(( $(date +%s) - start )) s" | tee -a "$RESULTS/wall_time.txt"
    for arm in "${FORKS[@]}"; do
        "${experiment[@]}" --seeds "$seed" --reuse --runs_only --threads "$THREADS" --arms "$arm" \
            > "$RESULTS/${arm}_seed$seed.log" 2>&1 &
        pids+=($!)
    done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "$(( ${#FORKS[@]} + 1 )) arms, ${#FORKS[@]} forked from the warm-up: $(( $(date +%s) - start )) s (exit status $status)" \
    | tee -a "$RESULTS/wall_time.txt"
[ $status = 0 ] || { tail -n 30 "$RESULTS"/*.log; exit $status; }
# The arms are kept; this adds the pixel floor, the seed reports and the summary.
IFS=,; "${experiment[@]}" --seeds "$SEEDS" --reuse --threads "$THREADS" --arms "$SOURCE,${FORKS[*]}" \
    > "$RESULTS/floor_and_summary.log" 2>&1; unset IFS
cat "$RESULTS/summary.md"
