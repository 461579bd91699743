# Every target sets up .venv from scratch when it is missing (or when the pinned stack changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup tiny tiny-weights demo demo-preference demo-grpo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build is small; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The built-in tiny model's pre-trained weights ship in plugins/tunesmith_plugins/models/tiny-v3;
# `tiny` prints where they are (and builds them only when they are missing).
tiny: setup
	$(BIN)/python -c "from tunesmith_plugins.models.tiny import ensure_tiny_model; print(ensure_tiny_model(log=print))"

# Re-run the tiny model's pre-training recipe and replace the shipped weights (about 2.5 idle minutes).
tiny-weights: setup
	$(BIN)/python -c "from tunesmith_plugins.models.tiny import rebuild_shipped_weights; rebuild_shipped_weights()"

demo: tiny
	$(BIN)/tunesmith run examples/dates/demo.yaml --overwrite

demo-preference: tiny
	$(BIN)/tunesmith run examples/preference/sft.yaml --overwrite
	$(BIN)/tunesmith run examples/preference/dpo.yaml --overwrite

demo-grpo: tiny
	$(BIN)/tunesmith run examples/grpo/warmup.yaml --overwrite
	$(BIN)/tunesmith run examples/grpo/grpo.yaml --overwrite

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check core plugins tests bench examples
	$(BIN)/ruff format --check core plugins tests bench examples
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py $(if $(filter-out 0,$(BENCH_QUICK)),--quick)

clean:
	rm -rf $(VENV) runs .pytest_cache
