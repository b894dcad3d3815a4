# The README's two commands: `make book` (the executed book) and `make test` (every test).
# Both create the virtual environment from requirements.txt on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.srfkit-installed
PROFILE ?= quick
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: venv data book test lint clean

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(PY) data/build.py --profile $(PROFILE)

book: data
	$(VENV)/bin/jupyter-book build . --builder html

test: data
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check srfkit tests data

clean:
	rm -rf _build
