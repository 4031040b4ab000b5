#!/usr/bin/env bash
# Run HERE, before a lent GPU machine is used: what results/gpu/on_device.sh needs that the device
# image lacks. That image (python3 with torch, timm, transformers, accelerate, pyarrow, pandas, ...;
# no registry access) has no datasets, evaluate or kornia, and no Fashion-MNIST. This writes
#   .whl/      wheels of those packages (and of their missing dependencies) at this venv's versions,
#   .gpudata/  the four Fashion-MNIST idx .gz files,
# both ignored through .git/info/exclude, ~38 MB together (a call carries at most 64 MiB).
# Then: device run, carry [".whl", ".gpudata"], command "bash results/gpu/on_device.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
for folder in .whl .gpudata; do
    grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> .git/info/exclude
done
rm -rf .whl && mkdir -p .whl .gpudata
specs=()
for package in datasets evaluate kornia kornia_rs dill multiprocess; do
    specs+=("$package==$("$PYTHON" -c "import importlib.metadata as m; print(m.version('$package'))")")
done
# The device's python3 is CPython 3.12 on x86-64.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${specs[@]}"
cp "$DATA"/*-ubyte.gz .gpudata/
du -sh .whl .gpudata
