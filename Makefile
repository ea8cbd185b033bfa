# The one entry point. `make book` builds the site, `make test` runs every check.
# Both create .venv and install the locked environment on first use (a stamp skips it afterwards).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

PROFILE ?= quick
DATASET ?= cifar10
DEVICE  ?= auto
# EXECUTOR=slurm: the grids the chapters miss go to Slurm as job arrays (options in data/slurm.toml);
# local, the default, trains them on this machine's cores or GPUs (read by results.sweep_results).
EXECUTOR ?= $(or $(L2BN_EXECUTOR),local)
export L2BN_EXECUTOR := $(EXECUTOR)
# SOLUTIONS=hide: the student edition (no solutions in the pages or the downloads).
SOLUTIONS ?= show
# A repository URL turns on the repository and launch buttons; without one the site stays offline.
REPOSITORY_URL ?=
export L2BN_REPOSITORY_URL := $(REPOSITORY_URL)

.PHONY: help venv test lint book chapter handouts sweep bench speedcheck gpubench info clean

help:
	@echo "make book     build the site (PROFILE=$(PROFILE) DATASET=$(DATASET) DEVICE=$(DEVICE) EXECUTOR=$(EXECUTOR))"
	@echo "              offline: make book PROFILE=smoke DATASET=synthetic"
	@echo "              student edition (no solutions): make book SOLUTIONS=hide"
	@echo "make test     lint, unit tests, the smoke build of the book and the browser test"
	@echo "make chapter  NB=04_update_rules ARGS='-p optimizer rmsprop'   rerun one chapter"
	@echo "make handouts one .ipynb per chapter without solutions, in book/_build/handouts"
	@echo "make sweep    ARGS='--optimizer adam --profile smoke'          one grid through the CLI"
	@echo "make bench    ARGS='--profile quick --ms 1,7'                  speed report"
	@echo "make speedcheck OLD=8101fca   the quick book from scratch at OLD and at HEAD, and the ratio"
	@echo "              ARGS=--grids: only the paper's five grids, the same work at both commits"
	@echo "              ARGS='--grids --rounds 2': old, new, new, old (a drifting machine slows both alike)"
	@echo "make gpubench the paper profile's bench on a GPU at fp32, tf32 and bf16 (JSON in bench-gpu/)"
	@echo "make clean    remove built pages (results in data/results are kept)"

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests notebooks book bench

test: lint
	$(PY) -m pytest --durations=8

sweep: $(STAMP)
	$(VENV)/bin/l2bn sweep $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/l2bn bench $(ARGS)

# The quick book from scratch at an older commit and at HEAD, one after the other (bench/speedcheck.py).
OLD ?= 8101fca
speedcheck: $(STAMP)
	$(PY) bench/speedcheck.py --old $(OLD) $(ARGS)

# The GPU figures: `l2bn bench` on the paper profile at fp32, tf32 and bf16 (bench/gpu.sh; on a lent
# GPU machine without this venv: bash bench/gpu.sh).
gpubench: $(STAMP)
	PYTHON=$(PY) bash bench/gpu.sh

info: $(STAMP)
	$(VENV)/bin/l2bn info

# --- book -------------------------------------------------------------------------------------
# `make book`: notebooks/*.py -> jupytext -> papermill (executed notebooks and their stamps in
# book/_generated/) -> jupyter-book build -W -n --keep-going -> book/_build/html. Only notebooks
# whose source, parameters, data or library code changed are executed again. See book/USAGE.md.
BOOK_SETTINGS = --profile $(PROFILE) --dataset $(DATASET) --device $(DEVICE) --solutions $(SOLUTIONS)

.PHONY: browser

book: $(STAMP)
	$(PY) book/build.py $(BOOK_SETTINGS) $(ARGS)

# One chapter with other parameters, then the site: make chapter NB=04_update_rules ARGS="-p optimizer rmsprop"
chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=<chapter> [ARGS='-p NAME VALUE -y \"NAME: [1, 2]\"']"; \
	  echo "chapters: $$(cd notebooks && ls *.py | sed 's/\.py$$//' | tr '\n' ' ')"; exit 2; }
	$(PY) book/build.py $(BOOK_SETTINGS) --only $(NB) $(ARGS)

# Handouts: each chapter's source as a notebook without its solutions (book/handouts.py).
handouts: $(STAMP)
	$(PY) book/handouts.py

# Headless Chromium for the browser test of the site (Debian package) and axe-core for its
# accessibility check (npm, into book/_build/tools); each installed only when missing.
AXE_VERSION := 4.14.1
AXE := book/_build/tools/node_modules/axe-core/axe.min.js
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium (apt-get) for the browser test"; \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; \
	fi
	@if [ ! -f $(AXE) ]; then \
	  if ! command -v npm >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y npm; \
	  fi; \
	  echo "installing axe-core $(AXE_VERSION) (npm) for the accessibility check"; \
	  npm install --no-audit --no-fund --silent --prefix book/_build/tools axe-core@$(AXE_VERSION); \
	fi

test: browser

# A C compiler for the fused normalisation kernel (src/l2bn/fused.py), which its test requires (the
# Debian package gcc, installed only when there is no cc; without one, training uses PyTorch's kernels).
.PHONY: compiler
compiler:
	@if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing gcc (apt-get) for the fused kernel"; \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y gcc; \
	fi

test: compiler

# Slurm and munge for the executor's test on a one-node cluster (Debian packages; installed only
# when missing).
.PHONY: slurm
slurm:
	@if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/munged ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing slurm-wlm and munge (apt-get) for the Slurm test"; \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge; \
	fi

test: slurm
# --- end book ---------------------------------------------------------------------------------

clean:
	rm -rf book/_build book/_generated
