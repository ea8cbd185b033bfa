# The one entry point. `make book` builds the site, `make test` runs every check.
# Both create .venv and install the locked environment on first use (a stamp skips it afterwards).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

PROFILE ?= quick
DATASET ?= cifar10
DEVICE  ?= auto

.PHONY: help venv test lint book chapter sweep bench info clean

help:
	@echo "make book     build the site (PROFILE=$(PROFILE) DATASET=$(DATASET) DEVICE=$(DEVICE))"
	@echo "              offline: make book PROFILE=smoke DATASET=synthetic"
	@echo "make test     lint, unit tests, the smoke build of the book and the browser test"
	@echo "make chapter  NB=04_update_rules ARGS='-p optimizer rmsprop'   rerun one chapter"
	@echo "make sweep    ARGS='--optimizer adam --profile smoke'          one grid through the CLI"
	@echo "make bench    ARGS='--profile quick --ms 1,7'                  speed report"
	@echo "make clean    remove built pages (results in data/results are kept)"

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests notebooks book

test: lint
	$(PY) -m pytest

sweep: $(STAMP)
	$(VENV)/bin/l2bn sweep $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/l2bn bench $(ARGS)

info: $(STAMP)
	$(VENV)/bin/l2bn info

# --- book -------------------------------------------------------------------------------------
book: $(STAMP)
	@echo "the book pipeline is not built yet"

chapter: $(STAMP)
	@echo "the book pipeline is not built yet"
# --- end book ---------------------------------------------------------------------------------

clean:
	rm -rf book/_build
