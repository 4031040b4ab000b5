#!/usr/bin/env bash
# Run ON a lent GPU machine, after results/gpu/prepare_carry.sh here:
#   device run, carry [".whl", ".gpudata"], timeout_s 600, command "bash results/gpu/on_device.sh"
# Installs the carried wheels and data, then runs, in one call of at most BUDGET seconds:
#   1. results/gpu/run_gh_schedule.sh (issue 12 item 7: four arms, three forked from the first's
#      warm-up and run side by side with it, EPOCHS epochs,
#      full-width ResNet-18, bf16, batched views), given at most SCHEDULE_S seconds;
#   2. results/gpu/run_gpu_check.sh (issue 13's GPU targets) in the time that is left.
# What comes back ($OUT, at most 8 files): each step's log and a .tgz of its results folder, to be
# unpacked into the repository root here. A schedule cut by its limit resumes from its checkpoints
# if this script is called again while the machine is still held (the work folder stays there).
set -uo pipefail
BACK=${OUT:?this script runs through the device tool, which sets OUT}
BUDGET=${BUDGET:-570}
SCHEDULE_S=${SCHEDULE_S:-440}
EPOCHS=${EPOCHS:-100}
export PYTHON=${PYTHON:-python3}  # the device image's python3 holds torch
start=$(date +%s)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
"$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl 2>&1 | tail -n 2
mkdir -p /usr/share/datasets/fashion-mnist && cp .gpudata/*-ubyte.gz /usr/share/datasets/fashion-mnist/
"$PYTHON" -c "import accelerate, datasets, evaluate, kornia, timm, torch, transformers
print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__,
      'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'kornia', kornia.__version__)" \
    || exit 3
# The scripts' OUT is the results folder in the repository, not the device tool's OUT.
OUT=results/gpu EPOCHS=$EPOCHS EXTRA=${EXTRA:---channels_last true} timeout "$SCHEDULE_S" \
    bash results/gpu/run_gh_schedule.sh > "$BACK/schedule.log" 2>&1
echo "schedule: exit status $? after $(( $(date +%s) - start )) s"
tail -c 2500 "$BACK/schedule.log"
for log in "results/gpu/fashion_mnist_lt_${EPOCHS}ep"/*.log; do  # where each arm stands (progress bars)
    echo "== $log"; tail -c 300 "$log" | tr '\r' '\n' | tail -n 2
done
tar czf "$BACK/gh_schedule.tgz" "results/gpu/fashion_mnist_lt_${EPOCHS}ep"
left=$(( BUDGET - $(date +%s) + start ))
echo "GPU check: $left s left"
if [ "$left" -gt 60 ]; then
    OUT=results/gpu timeout "$left" bash results/gpu/run_gpu_check.sh > "$BACK/check.log" 2>&1
    echo "GPU check: exit status $?"
    tail -c 1500 "$BACK/check.log"
fi
tar czf "$BACK/gpu_check.tgz" results/gpu/*.json results/gpu/*.txt
echo "total $(( $(date +%s) - start )) s"
