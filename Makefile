# Two commands matter: `make demo` (the main job) and `make test` (the tests). Both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel on this project's machines; GPU users: make TORCH_SPEC='torch>=2.4' ...
TORCH_SPEC ?= torch==2.13.0
# `make bench` compares with the seed (magvit2-pytorch 0.5.1) in its own environment (torch 2.14.1, ~5.8 GB), built
# once from an exact lock; `make test` never builds it. Flags pass on: make bench BENCH_FLAGS='--only reference'
REF_VENV ?= .venv-reference
BENCH_FLAGS ?=
# training minutes; the rest of the 15-minute budget goes to the install (~1.7 min), data, tokenizing and sampling
# the 100 judged videos (1.4-1.7 min), which take longer on a slower machine. With this default the whole `make demo`,
# install included, must end within DEMO_BUDGET minutes of its start: each training stage gets what fits before that
# deadline (trainers/demo/run.py). Setting DEMO_MINUTES yourself (make demo DEMO_MINUTES=30) trains that long.
DEMO_MINUTES ?= 10.5
DEMO_BUDGET ?= 15
ifeq ($(origin DEMO_MINUTES),file)
DEMO_FINISH_BY := $(shell echo $$(date +%s) $(DEMO_BUDGET) | awk '{ printf "%d", $$1 + $$2 * 60 }')
endif
# stage one of the demo: fsq (default) or lfq-gan (LFQ codes + the GAN): make demo DEMO_TOKENIZER=lfq-gan
DEMO_TOKENIZER ?= fsq
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: venv browser test test-fast demo bench bench-env gpu-check lint clean

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

# The browser test (tests/test_app_browser.py) drives Debian's Chromium: installed here when missing and root with
# apt-get; otherwise one line says what to install, and that test fails (it never skips).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -n "$${CHROMIUM:-}" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing chromium for the browser test (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "make: apt-get install chromium failed; tests/test_app_browser.py will fail"; \
	  else \
	    echo "make: the browser test needs Chromium: run 'sudo apt-get install -y chromium' (or set CHROMIUM=/path/to/chromium)"; \
	  fi; }

test: venv browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

demo: venv
	DEMO_MINUTES=$(DEMO_MINUTES) DEMO_TOKENIZER=$(DEMO_TOKENIZER) DEMO_FINISH_BY=$(DEMO_FINISH_BY) bash scripts/demo.sh

$(REF_VENV)/.installed: benchmarks/reference-requirements.txt
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q -r benchmarks/reference-requirements.txt
	touch $@

bench-env: $(REF_VENV)/.installed

bench: venv bench-env
	$(PY) -m benchmarks.run_all --reference-python $(REF_VENV)/bin/python $(BENCH_FLAGS)

gpu-check: venv  # on a GPU machine: make TORCH_SPEC='torch>=2.4' gpu-check
	$(PY) -m benchmarks.gpu_check

lint: venv  # ruff's linter; the code is not held to `ruff format`
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(REF_VENV) .pytest_cache .ruff_cache
