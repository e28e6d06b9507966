# Two commands matter: `make demo` (the main job) and `make test` (the tests). Both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel on this project's machines; GPU users: make TORCH_SPEC='torch>=2.4' ...
TORCH_SPEC ?= torch==2.13.0
DEMO_MINUTES ?= 12
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-fast demo bench gpu-check lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	# lpips: only its weight files (LPIPS heads) and, in the tests, its code as the reference; --no-deps because it
	# requires torchvision, which would replace the CPU torch (see pyproject.toml)
	$(PY) -m pip install -q --no-deps 'lpips==0.1.4'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

demo: venv
	DEMO_MINUTES=$(DEMO_MINUTES) bash scripts/demo.sh

bench: venv
	$(PY) -m benchmarks.run_all

gpu-check: venv  # on a GPU machine: make TORCH_SPEC='torch>=2.4' gpu-check
	$(PY) -m benchmarks.gpu_check

lint: venv  # ruff's linter; the code is not held to `ruff format`
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
