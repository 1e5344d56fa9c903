# Every target installs what it needs first (make install is idempotent).
# Run from the repository root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := src
export WANDB_MODE ?= offline
# Reproduction targets: PROFILE=paper (default) or smoke; LAUNCHER=basic|joblib|submitit_local|slurm|slurm_cpu|slurm_shared;
# OVERRIDES="key=value ..." go to every job (hydra.launcher.* included), e.g.
#   make fig4 LAUNCHER=slurm OVERRIDES="hydra.launcher.gpus_per_node=0 hydra.launcher.partition=cpu"
PROFILE ?= paper
LAUNCHER ?= basic
JOBS ?= 2
TEST_JOBS ?= 2        # pytest-xdist workers of make test (one per core of a 2-core machine)
OVERRIDES ?=
study = $(PY) -m blf.study $(1) --profile $(PROFILE) --launcher $(LAUNCHER) --jobs $(JOBS) $(OVERRIDES)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all bench fig1 fig2 fig3 fig4 fig5 fig7 table1 table2 table3 table4 table5 \
	paper mnist-2c2f wandb-sync lint gpu-wheels gpu-check test-slurm test-gpu-path

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "Variables for fig*/table*: PROFILE=paper|smoke (default paper), LAUNCHER=basic|joblib|submitit_local|slurm|slurm_cpu|slurm_shared, JOBS=N (joblib),"
	@echo "  OVERRIDES=\"key=value ...\" (added to every job, e.g. trainer.amp=bf16 or hydra.launcher.partition=cpu)"

install: $(STAMP) ## Create .venv from requirements.txt (once; again only if requirements.txt changes)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install ## MNIST: train 2C2F baseline and 2C2F+BLF, PGD over the eps grid, table + plot in results/demo/
	$(PY) -m blf.study demo --sweep-dir multirun/demo --out-dir results/demo $(OVERRIDES)

test: install ## Fast test suite (a few minutes on 2 CPU cores; TEST_JOBS parallel workers)
	$(PY) -m pytest -n $(TEST_JOBS) -m "not slow and not slurm"

test-gpu-path: install ## The end-to-end stage of make gpu-check, on tiny settings on the CPU (about 5 minutes; CI runs it)
	$(PY) -m pytest tests/test_gpu_check.py -m slow -k end_to_end

test-all: install ## All tests, including those marked slow (not the SLURM ones: make test-slurm)
	$(PY) -m pytest -m "not slurm"

test-slurm: install ## Brings up a single-node SLURM (Debian, root), runs the tests marked slurm, stops it again
	tools/slurm/local-cluster.sh up
	$(PY) -m pytest -m slurm tests/test_slurm.py; status=$$?; tools/slurm/local-cluster.sh down; exit $$status

bench: install ## Throughput benchmarks; writes bench/latest.json
	$(PY) benchmarks/bench.py --out bench/latest.json

# The GPU check runs with the GPU machine's own Python and torch (GPU_PYTHON), whatever their
# versions; what that Python lacks (hydra-core, omegaconf and antlr4 for the check; advertorch and
# pyautoattack for evaluations) comes from gpu-wheels/, made where pip works (pure-Python wheels).
GPU_PYTHON ?= python3
GPU_WHEELS := gpu-wheels
GPU_SITE := .gpu-site
GPU_PACKAGES = $(shell grep -E '^(hydra-core|omegaconf|advertorch|pyautoattack)==' requirements.txt | cut -d' ' -f1) \
	antlr4-python3-runtime==4.9.3
GPU_CHECK_ARGS ?=

gpu-wheels: ## Wheels of the packages a GPU machine's Python lacks -> gpu-wheels/ (git-ignored; copy it along)
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) $(GPU_PACKAGES)
	$(PYTHON) tools/trim_wheels.py $(GPU_WHEELS)
	@du -sh $(GPU_WHEELS); ls -1 $(GPU_WHEELS)

gpu-check: ## Paper-scale training cost on this CUDA machine in < 8 min -> bench/gpu-check.json (GPU_PYTHON=python3)
	@if ! $(GPU_PYTHON) -c "import hydra, omegaconf" 2>/dev/null; then \
	  ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1 || { echo "error: $(GPU_PYTHON) lacks hydra-core and omegaconf and $(GPU_WHEELS)/ holds no wheels; allowed: make gpu-wheels where pip works, then copy $(GPU_WHEELS)/ here" >&2; exit 2; }; \
	  $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl; \
	fi
	PYTHONPATH=src:$(GPU_SITE) $(GPU_PYTHON) benchmarks/gpu_check.py --out bench/gpu-check.json $(GPU_CHECK_ARGS)

fig1: install ## Fig. 1: logit/pre-logit norms vs PGD accuracy, ResNet-18 CIFAR-10 -> results/fig1/<profile>/
	$(call study,fig1)

fig2: install ## Fig. 2: BLF vs tanh with the extrema of Theorem 3 -> results/fig2/
	$(PY) -m blf.report.figures fig2 results/fig2

fig3: install ## Fig. 3: MNIST 2C2F/4C3F under PGD, ST and AT, 5 seeds -> results/fig3/<profile>/
	$(call study,fig3)

fig4: install ## Fig. 4: CIFAR-10 ResNet-18/WRN-34-10 under PGD, ST and AT, 3 seeds -> results/fig4/<profile>/
	$(call study,fig4)

fig5: install ## Fig. 5: BLF under PGD vs tanh-surrogate PGD, ResNet-18 -> results/fig5/<profile>/
	$(call study,fig5)

fig7: install ## Fig. 7: sine and single-wave heads vs BLF -> results/fig7/<profile>/
	$(call study,fig7)

table1: install ## Table 1: accuracy under SPSA -> results/table1/<profile>/
	$(call study,table1)

table2: install ## Table 2: accuracy under Square Attack -> results/table2/<profile>/
	$(call study,table2)

table3: install ## Table 3: L-inf operator norms of ResNet-18's convolutions -> results/table3/<profile>/
	$(call study,table3)

table4: install ## Table 4: accuracy under APGD-CE and APGD-T -> results/table4/<profile>/
	$(call study,table4)

mnist-2c2f: install ## Paper-scale MNIST 2C2F (ST) on a CPU, beside Tables 2 and 4 (hours; resumes) -> results/mnist_2c2f/<profile>/
	$(PY) -m blf.study mnist_2c2f --profile $(PROFILE) --launcher joblib --jobs $(JOBS) $(OVERRIDES)

table5: install ## Table 5 / Figs. 8-16: input loss surfaces of ResNet-18 -> results/table5/<profile>/
	$(call study,table5)

paper: fig1 fig2 fig3 fig4 fig5 fig7 table1 table2 table3 table4 table5 ## Every figure and table

wandb-sync: install ## Upload offline W&B runs found under multirun/ and outputs/
	@find multirun outputs -type d -name 'offline-run-*' 2>/dev/null | xargs -r $(VENV)/bin/wandb sync

lint: install ## ruff (pinned in requirements.txt): pyflakes (F841 unused variables included), pycodestyle, imports, bugbear
	$(VENV)/bin/ruff check src tests benchmarks
