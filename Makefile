# gh_hf — environment, tests, quickstart.
# `make test` builds .venv from nothing when it is missing, then runs the offline test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The exact torch pair on this project's machines (lies on their disk; other versions download GBs).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test quality demo experiment clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e ".[dev]"
	@if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		(apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)) \
		|| echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	fi

venv: $(PY)

# pytest-xdist: one test worker per core (2-process tests launch their own processes on a free port).
test: $(PY)
	$(PY) -m pytest -q -n auto tests

quality: $(PY)
	$(VENV)/bin/ruff check gh_hf scripts tests
	$(VENV)/bin/ruff format --check gh_hf scripts tests

# The quickstart: pretrain the demo preset (Fashion-MNIST-LT, SimCLR + GH) on this machine.
# accelerate launch sets OMP_NUM_THREADS=1 per process unless told: give the one process every core.
ACCELERATE_ARGS := --num_processes 1 --num_machines 1 --num_cpu_threads_per_process $(shell nproc) --dynamo_backend no
demo: $(PY)
	$(VENV)/bin/accelerate launch $(ACCELERATE_ARGS) scripts/pretrain.py --preset demo
	@echo
	@echo "Encoder: outputs/demo/encoder (kNN accuracy in outputs/demo/knn_metrics.json). Load it with:"
	@echo "  .venv/bin/python -c \"import gh_hf; from transformers import AutoModel; print(AutoModel.from_pretrained('outputs/demo/encoder'))\""

# README "Results": 3 arms x 3 seeds on Fashion-MNIST-LT, each benchmarked: 9 pretraining runs of 80
# epochs, ~30 min each on 2 idle CPU cores (~5 h in all).
# Runs already kept in results/fashion_mnist_lt/runs/ are reused: delete them to rerun from scratch.
experiment: $(PY)
	$(PY) scripts/experiment.py --reuse

clean:
	rm -rf $(VENV) build *.egg-info
