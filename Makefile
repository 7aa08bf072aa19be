# Every target does its own set-up: a fresh machine needs nothing but python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
# torch's OpenMP threads would spin between ops and starve Numba's kernels and loader workers (the CLI sets the same).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test bench gpu-check-prepare clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU wheel; any other spec would pull several GB of CUDA wheels.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-only -q

# Before a GPU session, here: shards from an espeak-ng corpus and the wheels the GPU machine lacks, in one folder
# (<= 30 MB) to carry there; it prints the command to run on the GPU machine (tools/gpu_check.py).
gpu-check-prepare: $(STAMP)
	$(BIN)/python tools/gpu_check.py --prepare .gpu_check

clean:
	rm -rf $(VENV) $(DEMO_DIR) .numba_cache .pytest_cache .gpu_check
