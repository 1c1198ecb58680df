# The two commands of the README: `make demo` and `make test`. Both create .venv if it is
# missing and install pixdiff into it, torch first from the pinned CPU wheel (an unpinned torch
# would pull a multi-GB CUDA build). The stamp file makes the install idempotent.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.pixdiff-installed
TORCH   ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install demo test test-all lint bench evidence clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# k-diffusion: a test-only peer whose sampling.py the sampler tests read (no dependencies needed)
	$(BIN)/pip install --quiet --no-deps "k-diffusion==0.1.1.post1"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pixdiff.demo --out runs/demo

# pytest exits 5 when no test was collected: that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q -x --timeout=900 --durations=20 ; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "" --timeout=3600 ; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# ruff's rules are in pyproject.toml ([tool.ruff]); CI runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check pixdiff tests benchmarks experiments scripts

bench: $(STAMP)
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Issue 16's studies at CPU scale, one after another (hours on 2 cores; each resumes where it stopped:
# runs and scores are kept under runs/evidence/). Pages go to docs/evidence/. SCALE=gpu for a GPU.
SCALE ?= cpu
evidence: $(STAMP)
	$(BIN)/python experiments/evidence_samplers.py --scale $(SCALE)
	$(BIN)/python experiments/evidence_training.py --scale $(SCALE) --claims 5,1
	$(BIN)/python experiments/evidence_ema.py --scale $(SCALE)
	$(BIN)/python experiments/evidence_architecture.py --scale $(SCALE)
	$(BIN)/python experiments/evidence_variance.py --scale $(SCALE)
	$(BIN)/python experiments/evidence_sigmoid.py --scale $(SCALE)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
