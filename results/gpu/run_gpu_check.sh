#!/usr/bin/env bash
# The GPU check of README "Performance": the GH/SimCLR step benchmark (ResNet-18, small-input
# stem, 32x32, bf16, batch 512) and a short fashion_mnist_lt pretraining in bf16.
# Usage: DATA=/path/to/fashion-mnist-idx OUT=results/gpu bash results/gpu/run_gpu_check.sh
set -euo pipefail
OUT=${OUT:-results/gpu}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
WORKERS=${WORKERS:-12}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
python3 scripts/bench_step.py --device cuda --backbone resnet18 --backbone_kwargs '{}' --in_chans 3 \
    --image_size 32 --num_anchors 100 --batch_size 512 --bf16 true --repeats 30 \
    --output "$OUT/bench_step_gpu.json" 2>&1 | tee "$OUT/bench_step_gpu.txt"
python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    scripts/pretrain.py --preset fashion_mnist_lt --data_dir "$DATA" --backbone_kwargs '{}' --image_size 32 \
    --per_device_batch_size 512 --num_epochs 3 --gh_warmup_epochs 1 --gh_ramp_epochs 1 --prior_every_epochs 1 \
    --mixed_precision bf16 --dataloader_num_workers "$WORKERS" --checkpoint_every_epochs 0 --knn_at_end false \
    --logging_steps 1 --output_dir /tmp/gpu_pretrain > "$OUT/pretrain.log" 2>&1 || { tail -30 "$OUT/pretrain.log"; exit 1; }
python3 - "$OUT" <<'PY'
import json, statistics, sys
logs = [json.loads(line) for line in open("/tmp/gpu_pretrain/log.jsonl") if '"loss"' in line]
rates = [entry["images_per_s"] for entry in logs[3:]]  # skip start-up steps
warmup = [e["images_per_s"] for e in logs[3:] if e["gh_weight"] == 0]
gh = [e["images_per_s"] for e in logs[3:] if e["gh_weight"] > 0]
summary = {"steps": len(logs), "median_images_per_s": statistics.median(rates),
           "median_images_per_s_ssl_only": statistics.median(warmup) if warmup else None,
           "median_images_per_s_with_gh": statistics.median(gh) if gh else None,
           "final_loss": logs[-1]["loss"]}
json.dump(summary, open(f"{sys.argv[1]}/pretrain_summary.json", "w"), indent=2)
print(summary)
PY
cp /tmp/gpu_pretrain/log.jsonl "$OUT/pretrain_log.jsonl"
