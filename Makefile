# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - create .venv if missing, install, run a short Walker study (sac vs pebble vs bilevel,
#                 run folders with TensorBoard logs) and plot it
#   make test   - create .venv if missing, install, run the default (fast) test tier
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all venv lint bench clean-demo

venv: $(STAMP)

# torch==2.13.0 first: where a local CPU wheel of it is available, that is taken, where a later resolution would
# otherwise pull gigabytes of CUDA packages.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pref-brl-sweep --name demo --methods sac pebble bilevel --budgets 20 --seeds 0 --jobs 2 \
		--set steps=20000 --set num_unsup_steps=4000 --set num_interact=4000 --set reward_batch=5 --set paired_episodes=4 \
		--set eval_frequency=2500 --set num_eval_episodes=2 --set checkpoint_frequency=5000
	$(BIN)/pref-brl-plot runs/demo --min-runs 1
	@echo "Figures and tables: runs/demo/plots/   TensorBoard: $(BIN)/tensorboard --logdir runs/demo"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -rs

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m ''

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pref-brl-bench --quick
