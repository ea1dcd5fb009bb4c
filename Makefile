# `make test` and `make demo` set up .venv on first use (CPU torch, pinned numpy/numba).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo results clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/spikecut demo

# docs/RESULTS.md on real N-MNIST (../shared/data/nmnist_1k); reuses finished runs in runs/results.
results: $(STAMP)
	$(BIN)/python tools/results.py --root ../shared/data/nmnist_1k

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
