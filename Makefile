# Every target installs what it needs first (make install is idempotent).
# Run from the repository root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := src
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all bench fig2 wandb-sync lint clean-results

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv from requirements.txt (once; again only if requirements.txt changes)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: install ## MNIST: train 2C2F baseline and 2C2F+BLF, PGD over the eps grid, table + plot in results/demo/
	$(PY) src/train.py -m experiment=demo
	$(PY) -m blf.aggregate multirun/demo results/demo --title "Demo: 2C2F on MNIST, 5 epochs, PGD-40 on 500 test images"

test: install ## Fast test suite (a few minutes on 2 CPU cores)
	$(PY) -m pytest -m "not slow"

test-all: install ## All tests, including those marked slow
	$(PY) -m pytest

bench: install ## Throughput benchmarks; writes bench/latest.json
	$(PY) -m blf.bench --out bench/latest.json

fig2: install ## Fig. 2: BLF vs tanh with the extrema of Theorem 3 -> results/fig2/
	$(PY) -m blf.figures fig2 results/fig2

wandb-sync: install ## Upload offline W&B runs found under multirun/ and outputs/
	@find multirun outputs -type d -name 'offline-run-*' 2>/dev/null | xargs -r $(VENV)/bin/wandb sync

lint: install ## ruff (if installed in .venv)
	$(VENV)/bin/ruff check src tests
