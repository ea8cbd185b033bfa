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
	$(PY) -m pytest --durations=8

sweep: $(STAMP)
	$(VENV)/bin/l2bn sweep $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/l2bn bench $(ARGS)

info: $(STAMP)
	$(VENV)/bin/l2bn info

# --- book -------------------------------------------------------------------------------------
# `make book`: notebooks/*.py -> jupytext -> papermill (executed notebooks and their stamps in
# book/_generated/) -> jupyter-book build -W -n --keep-going -> book/_build/html. Only notebooks
# whose source, parameters, data or library code changed are executed again. See book/USAGE.md.
BOOK_SETTINGS = --profile $(PROFILE) --dataset $(DATASET) --device $(DEVICE)

.PHONY: browser

book: $(STAMP)
	$(PY) book/build.py $(BOOK_SETTINGS) $(ARGS)

# One chapter with other parameters, then the site: make chapter NB=04_update_rules ARGS="-p optimizer rmsprop"
chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=<chapter> [ARGS='-p NAME VALUE -y \"NAME: [1, 2]\"']"; \
	  echo "chapters: $$(cd notebooks && ls *.py | sed 's/\.py$$//' | tr '\n' ' ')"; exit 2; }
	$(PY) book/build.py $(BOOK_SETTINGS) --only $(NB) $(ARGS)

# Headless Chromium for the browser test of the site (Debian package; installed only when missing).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium (apt-get) for the browser test"; \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; \
	fi

test: browser
# --- end book ---------------------------------------------------------------------------------

clean:
	rm -rf book/_build book/_generated
