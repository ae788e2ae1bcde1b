# molssl developer entry points. Every target works on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist: the suite is CPU-bound and the CI machine has 2 cores.
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: install test test-slow lint demo tensorboard clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel first, so that no dependency can pull a CUDA build of torch.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	@$(BIN)/python -c "import torch; print('installed torch', torch.__version__)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# pytest exits 5 when no test is marked slow; that is not a failure.
test-slow: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m slow || [ $$? -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# A few minutes of UniCorn pre-training on this CPU: configs/unicorn.yaml with small encoders,
# the embedded default (RDKit's NCI molecules, prepared on first use and cached), a short
# warm-up + cosine schedule and validation every DEMO_VAL_EVERY steps. ValidationSummary
# validates once before the first step and prints, per objective, the held-out loss at step 0
# against the end, then where the TensorBoard logs and the checkpoint are.
# One torch thread: at this model width an op is too small to gain from a second thread, and on
# a busy 2-core machine OpenMP threads waiting for each other made the run 5x slower.
DEMO_STEPS     ?= 300
DEMO_VAL_EVERY ?= 100
DEMO_THREADS   ?= 1
DEMO_ARGS      ?=
demo: $(STAMP)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/molssl fit --config configs/unicorn.yaml \
	  --model.init_args.encoder_3d.init_args.hidden_channels=64 \
	  --model.init_args.encoder_3d.init_args.num_layers=3 \
	  --model.init_args.encoder_3d.init_args.num_heads=4 \
	  --model.init_args.encoder_3d.init_args.num_rbf=32 \
	  --model.init_args.encoder_2d.init_args.hidden_channels=64 \
	  --model.init_args.encoder_2d.init_args.num_layers=3 \
	  --model.init_args.encoder_2d.init_args.num_heads=4 \
	  --model.init_args.lr=1e-3 \
	  --model.init_args.warmup_steps=30 \
	  --model.init_args.min_lr_ratio=0.1 \
	  --data.init_args.num_molecules=1000 \
	  --data.init_args.val_fraction=0.1 \
	  --data.init_args.batch_size=32 \
	  --data.init_args.num_workers=0 \
	  --trainer.max_steps=$(DEMO_STEPS) \
	  --trainer.val_check_interval=$(DEMO_VAL_EVERY) \
	  --trainer.log_every_n_steps=10 \
	  --trainer.logger.init_args.name=unicorn_demo \
	  --checkpoint.every_n_train_steps=$(DEMO_VAL_EVERY) \
	  --trainer.callbacks+=molssl.modules.ValidationSummary \
	  $(DEMO_ARGS)

# TensorBoard on every run under runs/ (demo included): http://localhost:6006
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
