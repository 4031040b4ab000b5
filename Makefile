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

test: $(PY)
	$(PY) -m pytest -q tests

quality: $(PY)
	$(VENV)/bin/ruff check gh_hf scripts tests
	$(VENV)/bin/ruff format --check gh_hf scripts tests

demo: $(PY)
	@echo "make demo will run: accelerate launch scripts/pretrain.py (the 'demo' preset) — coming with the training issue."

clean:
	rm -rf $(VENV) build *.egg-info
