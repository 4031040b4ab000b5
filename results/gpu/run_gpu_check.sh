#!/usr/bin/env bash
# The GPU check of README "Performance" (issue 13's GPU targets), one prepared script:
#   1. the GH/SimCLR step benchmark (ResNet-18, small-input stem, 32x32, bf16, batch 512);
#   2. the end-to-end throughput of the real training loop on the fashion_mnist_lt preset with that
#      backbone: per-image views in 14 workers vs batched views on the GPU, eager vs torch.compile
#      vs compile + channels_last, and the step alone (the data pipeline's share);
#   3. last (so a cut leaves 1-2 whole): BCL's memory-boosted views per image in the workers vs
#      batched on the GPU, boost on (README "Performance", "BCL's views, batched").
# Usage (from the repository root): OUT=results/gpu bash results/gpu/run_gpu_check.sh
set -euo pipefail
OUT=${OUT:-results/gpu}
WORKERS=${WORKERS:-14}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
"$PYTHON" scripts/bench_step.py --device cuda --backbone resnet18 --backbone_kwargs '{}' --in_chans 3 \
    --image_size 32 --num_anchors 100 --batch_size 512 --bf16 true --repeats 30 \
    --output "$OUT/bench_step_gpu.json" 2>&1 | tee "$OUT/bench_step_gpu.txt"
"$PYTHON" scripts/bench_throughput.py --preset fashion_mnist_lt --turns 3 --steps_per_turn 10 \
    --common "--backbone_kwargs {} --image_size 32 --in_chans 3 --per_device_batch_size 512 --mixed_precision bf16" \
    --arm "per_image=--view_pipeline per_image --dataloader_num_workers $WORKERS" \
    --arm "batched_compile=--view_pipeline batched --compile true" \
    --arm "batched_compile_cl=--view_pipeline batched --compile true --channels_last true" \
    --output "$OUT/throughput_gpu.json" 2>&1 | grep -v "it/s" | tee "$OUT/throughput_gpu.txt"
"$PYTHON" scripts/bench_throughput.py --preset fashion_mnist_lt --turns 3 --steps_per_turn 10 --default_arms false \
    --common "--backbone_kwargs {} --image_size 32 --in_chans 3 --per_device_batch_size 512 --mixed_precision bf16 --ssl_method bcl" \
    --arm "bcl_per_image=--view_pipeline per_image --dataloader_num_workers $WORKERS" \
    --arm "bcl_batched=--view_pipeline batched" \
    --output "$OUT/throughput_bcl_gpu.json" 2>&1 | grep -v "it/s" | tee "$OUT/throughput_bcl_gpu.txt"
