# RAD-DINO book: build and run infrastructure.
# Needs only python3.11 (or python3 >= 3.11) and make on a fresh machine.
#
#   make setup      .venv with the pinned environment, the package (editable), the python3
#                   kernelspec inside the venv, and chapters/*.ipynb paired from chapters/*.py
#   make test       setup (+ Debian chromium for the browser tests), then the test suite
#   make book       run every chapter at PRESET (default laptop), HTML in book/_build/html
#   make bench      benchmarks against the peers (benchmarks/bench.py; installs lightly)
#   make lint       ruff
#   make clean      remove build products (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PRESET ?= laptop
# pytest-xdist workers for `make test` (0: run in one process).
TEST_WORKERS ?= 2

STAMPS     := $(VENV)/.stamps
SETUP_STAMP := $(STAMPS)/setup
CHAPTER_PY := $(wildcard chapters/*.py)
CHAPTER_NB := $(CHAPTER_PY:.py=.ipynb)

.PHONY: help setup notebooks book browser test bench lint format clean distclean

help:
	@sed -n 's/^#   //p' Makefile

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, got " + sys.version' \
	  || { echo "make: set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(SETUP_STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.lock
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (raddino)"
	@mkdir -p $(STAMPS) && touch $@

setup: $(SETUP_STAMP) notebooks

# Paired notebooks for JupyterLab (the .py files are the sources; the .ipynb are ignored by
# git). Converted explicitly, never with --sync (which goes by file times).
notebooks: $(CHAPTER_NB)

chapters/%.ipynb: chapters/%.py $(SETUP_STAMP)
	$(BIN)/jupytext --quiet --to ipynb --set-kernel python3 --output $@ $<

book: setup
	$(BIN)/raddino book --preset $(PRESET)

# Debian's chromium for the headless-browser tests (tests/test_widget_browser.py), which drive
# it with playwright from requirements.lock; playwright never downloads a browser of its own.
# Installed with apt-get (as root, or with sudo where it needs no password) when missing. If it
# cannot be installed the browser tests fail and say why; RADDINO_SKIP_BROWSER=1 skips them.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ "$${RADDINO_SKIP_BROWSER:-0}" = 1 ]; then \
	  echo "make: RADDINO_SKIP_BROWSER=1: not installing chromium; the browser tests are skipped"; \
	elif [ -x "$(CHROMIUM)" ]; then :; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "make: WARNING: $(CHROMIUM) is missing and cannot be installed (not root, no" \
	      "passwordless sudo): install Debian's chromium package, or set RADDINO_SKIP_BROWSER=1;" \
	      "the browser tests will fail" >&2; \
	  else \
	    echo "make: installing Debian's chromium for the browser tests"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	      && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "make: WARNING: apt-get could not install chromium; the browser tests will" \
	        "fail (RADDINO_SKIP_BROWSER=1 skips them)" >&2; \
	  fi; \
	fi

test: setup browser
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))

# Benchmarks (outside the test suite): BENCH="embed mfu" runs some, BENCH_ARGS=--quick small.
BENCH ?=
bench: setup
	$(BIN)/python -m pip install --quiet 'lightly>=1.5' || echo "make: lightly not installed; the pretraining-step benchmark is skipped" >&2
	$(BIN)/python benchmarks/bench.py $(BENCH) $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff check --fix .

clean:
	rm -rf book/_build book/_site_src book/_executed .pytest_cache .ruff_cache
	rm -f chapters/*.ipynb
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
	rm -rf *.egg-info

distclean: clean
	rm -rf $(VENV) results .cache
