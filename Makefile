# medlearn: two commands set up and run everything on a fresh machine.
#   make demo   create .venv, install medlearn, run `medlearn demo` (every method on built-in data)
#   make test   same environment plus test extras, run the test suite (slow tests: make test-slow)
#
# TORCH_SPEC selects the PyTorch build installed first. The default is the CPU build; on a CUDA
# machine use e.g. `make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`
# or install torch into .venv yourself before `make`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# torch threads: medlearn picks min(2, usable cores) itself (medlearn/runtime.py); override with
# `make demo MEDLEARN_THREADS=4` or the environment.

.PHONY: demo test test-slow reproduce bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/medlearn demo

test: $(VENV)/.installed
	@PYTHON=$(BIN)/python tools/fetch-test-data
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	MEDLEARN_THREADS=1 $(BIN)/python -m pytest

test-slow: $(VENV)/.installed
	@PYTHON=$(BIN)/python tools/fetch-test-data
	MEDLEARN_THREADS=1 $(BIN)/python -m pytest -m "slow or not slow"

METHODS := c2l rubik ccl asoct cross_denoise crossover mgan videogan ltnet neuron_qc

# every method's CPU-scale reproduction in turn (about 90 min on 2 CPU cores: the wall times are in docs/results.md); one: medlearn reproduce NAME
reproduce: $(VENV)/.installed
	for m in $(METHODS); do $(BIN)/medlearn reproduce $$m || exit 1; done

# every benchmark script in turn (bench_threads wants an otherwise idle machine); one: python benchmarks/bench_NAME.py
bench: $(VENV)/.installed
	for m in $(METHODS); do $(BIN)/python benchmarks/bench_$$m.py --out docs/benchmarks.md || exit 1; done
	$(BIN)/python benchmarks/bench_threads.py --out docs/benchmarks.md

clean:
	rm -rf runs lightning_logs .pytest_cache
