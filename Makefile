# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - create .venv if missing, install, run a short Walker job (run folder + TensorBoard logs)
#   make test   - create .venv if missing, install, run the default (fast) test tier
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all venv lint bench clean-demo

venv: $(STAMP)

# torch==2.13.0 first: these machines hold a local CPU wheel of it, and a later unpinned resolution would
# otherwise pull gigabytes of CUDA packages.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pref-brl-train --env walker_walk --method pebble --run-dir runs/demo/walker_pebble \
		--steps 20000 --num-unsup-steps 4000 --num-interact 4000 --max-feedback 20 --reward-batch 5 \
		--eval-frequency 5000 --num-eval-episodes 2 --checkpoint-frequency 5000
	@echo "TensorBoard: $(BIN)/tensorboard --logdir runs/demo"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m ''

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pref-brl-bench --quick
