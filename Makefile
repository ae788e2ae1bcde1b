# molssl developer entry points. Every target works on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The exact versions that make install, make test and CI use (pip constraints; Python 3.11,
# x86-64 Linux). pyproject.toml keeps the ranges that users install from; `make lock` refreshes
# this file from them, so a new release of a dependency reaches main only through a commit.
LOCK   := constraints.txt
TORCH_VERSION := 2.13.0
# pytest-xdist: the suite is CPU-bound and the CI machine has 2 cores.
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: install data-packages test test-slow lint lock lock-check demo tensorboard clean

# pip, setuptools and wheel come from the lock too, and molssl is built without build isolation,
# so that not even the build backend is a floating version. The CPU wheel of torch goes in first,
# so that no dependency can pull a CUDA build.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade -c $(LOCK) pip setuptools wheel
	$(BIN)/python -m pip install -q -c $(LOCK) torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -c $(LOCK) --no-build-isolation -e ".[test]"
	@$(BIN)/python -c "import torch; print('installed torch', torch.__version__)"
	# The --help texts of fit/validate/test, cached now so that the first one is fast too.
	$(BIN)/python -c "from molssl.cli import warm_help_cache; warm_help_cache()"
	touch $(STAMP)

install: $(STAMP)

# Real data sets that install through the package registry, for experiments and benchmarks only
# (never needed by the core install or the tests; the lock keeps numpy where it is): QM9 with DFT geometries (qm9pack, MIT; data
# CC0) and MOSES's 1.6M drug-like SMILES (molsets, MIT; --no-deps: its declared dependencies
# are only needed for its metrics). `molssl prepare --input qm9pack` / `--input moses` and
# QM9DataModule(root="qm9pack") read them.
data-packages: $(STAMP)
	$(BIN)/python -m pip install -q -c $(LOCK) qm9pack==1.0.3
	$(BIN)/python -m pip install -q -c $(LOCK) --no-deps molsets==0.3.1

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# pytest exits 5 when no test is marked slow; that is not a failure.
test-slow: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m slow || [ $$? -eq 5 ]

# Re-resolves pyproject.toml's ranges in a scratch venv (newest releases that fit, CPU torch) and
# writes every installed distribution's exact version to the lock. Review the diff, run make test.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[test]"
	{ echo "# Exact versions for make install / make test / CI (pip constraints). Regenerate with"; \
	  echo "# 'make lock' after changing pyproject.toml; never edit by hand. torch is the CPU build."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -e 's/+cpu$$//' \
	    | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(LOCK); now: make clean install test"

# Fails when the venv holds a distribution, or a version, that the lock does not name: a
# dependency added to pyproject.toml without `make lock` would otherwise float.
lock-check: $(STAMP)
	@$(BIN)/python -m pip freeze --all --exclude-editable | sed -e 's/+cpu$$//' | LC_ALL=C sort -f \
	  > $(VENV)/.frozen
	@grep -v '^#' $(LOCK) | LC_ALL=C sort -f | diff - $(VENV)/.frozen \
	  && echo "lock-check: the venv is exactly $(LOCK)" \
	  || { echo "lock-check: the venv differs from $(LOCK) (< lock, > venv): run make lock"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# A few minutes of UniCorn pre-training on this CPU: configs/cpu/unicorn.yaml (the CPU-sized
# sibling of configs/unicorn.yaml: small encoders, 1,000 molecules of the embedded default
# (RDKit's NCI molecules, prepared on first use and cached), 300 steps with a short warm-up +
# cosine schedule, validation every 100 steps). ValidationSummary validates once before the
# first step and prints, per objective, the held-out loss at step 0 against the end, then where
# the TensorBoard logs and the checkpoint are. DEMO_ARGS adds overrides, e.g.
# DEMO_ARGS="--trainer.max_steps=600".
# One torch thread: at this model width an op is too small to gain from a second thread, and on
# a busy 2-core machine OpenMP threads waiting for each other made the run 5x slower.
DEMO_THREADS   ?= 1
DEMO_ARGS      ?=
demo: $(STAMP)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/molssl fit --config configs/cpu/unicorn.yaml $(DEMO_ARGS)

# TensorBoard on every run under runs/ (demo included): http://localhost:6006
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .ruff_cache src/*.egg-info
