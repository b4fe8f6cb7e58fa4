# The README's commands. `make setup` is run by the others; it is quick once .venv exists.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU torch from the local wheel cache where there is no NVIDIA GPU (an unpinned torch pulls a
# multi-GB CUDA build); the CUDA build where there is one.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

.PHONY: setup setup-dev browser lint format test test-fast demo bench clean

# `make setup`: what `make demo` needs (the core and the train extra: TensorBoard, the loss plot).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	@# A CPU torch left in .venv from before satisfies an unpinned "torch": replace it with the CUDA build.
	@if [ "$(TORCH_SPEC)" = "torch" ] && $(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; \
	  then $(BIN)/python -m pip install -q --force-reinstall torch; fi
	$(BIN)/python -m pip install -q -e ".[train]"
	touch $@

# `make setup-dev`: every extra plus the test tools (pytest, openai, playwright, ...), for `make test`.
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# Debian's Chromium for the playground's browser test; the test skips (saying why) where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "chromium could not be installed: the browser test will be skipped")

# Ruff (pyproject.toml's [tool.ruff]): lint and format, checked by `make test`; `make format` applies both.
LINTED := src tests bench scripts
lint: setup-dev
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: setup-dev
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

test: setup-dev browser lint
	$(BIN)/python -m pytest -n 2 --timeout 600 -q

test-fast: setup-dev
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not distributed"

demo: setup
	$(BIN)/cerebras-gpt demo

bench: setup-dev
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/sparse.py

.PHONY: gpu-check
# The CUDA paths checked and measured against transformers (GPU parts skipped, saying why, on a CPU).
gpu-check: setup
	$(BIN)/python bench/gpu_check.py --budget-min 8 --out gpu_check.json

clean:
	rm -rf $(VENV) runs out build dist
