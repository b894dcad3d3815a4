# The README's two commands: `make book` (the executed book) and `make test` (every test).
# Both create the virtual environment from requirements.txt on first use, and install detectron2
# (the second engine) into it: `make d2` builds its wheel from source once per machine (cached under
# $(D2_CACHE), keyed by source, torch and Python) and installs it with requirements-detectron2.txt.
#
#   make book    build the shipped data, execute every chapter (quick profile) into _build/html
#   make test    lint, unit tests, then the book (every chapter executed once, a cell error fails),
#                then a check of the executed chapters, then the browser checks
#
# Chapters train the quick-profile stages once into one run folder per profile and dataset
# ($SRFKIT_RUNS_DIR, default runs/); `make test` uses a fresh folder under _build/ so that every
# test run trains from scratch with the current code.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.srfkit-installed
PROFILE ?= quick
BUILD := _build
NBVAL_DIR := $(BUILD)/nbval
TEST_RUNS := $(abspath $(BUILD))/test-runs
# `make book` trains into a run folder keyed by the library's source, so a change in srfkit retrains
# (a stale stage would be refused by the trainers anyway) while a text-only rebuild reuses the runs.
LIB_HASH := $(shell find srfkit -name '*.py' | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-12)
BOOK_RUNS := $(abspath $(BUILD))/runs/$(LIB_HASH)
# Chapters that are notebooks (have a kernelspec); references.md is plain text.
NOTEBOOKS := $(shell grep -l '^kernelspec:' book/*.md)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export SRFKIT_PROFILE := $(PROFILE)
# One intra-op thread per process: on a small shared CPU (CI), two threads oversubscribe it and a
# quick-profile training step was measured 25x slower under load. Override with OMP_NUM_THREADS=N.
export OMP_NUM_THREADS ?= 1
# Notebook kernels must keep matplotlib's inline backend: never export MPLBACKEND here.
unexport MPLBACKEND

# detectron2 from source: the vendored tarball when the shared folder has it, else upstream at the same commit.
D2_COMMIT := 02b5c4e295e990042a714712c21dc79b731e8833
D2_TARBALL := $(abspath ../shared/vendor/detectron2-02b5c4e.tar.gz)
DETECTRON2_SRC ?= $(if $(wildcard $(D2_TARBALL)),$(D2_TARBALL),git+https://github.com/facebookresearch/detectron2.git@$(D2_COMMIT))
D2_CACHE ?= $(HOME)/.cache/srfkit/detectron2
D2_TORCH := $(shell sed -n 's/^torch==//p' requirements.txt)
# The cache key: the source's content (a local tarball) or its URL, and the torch it is built against.
D2_KEY = $(shell if [ -f '$(DETECTRON2_SRC)' ]; then sha256sum < '$(DETECTRON2_SRC)'; \
  else printf '%s' '$(DETECTRON2_SRC)' | sha256sum; fi | cut -c1-12)-torch$(D2_TORCH)
D2_WHEELS := $(D2_CACHE)/$(D2_KEY)
D2_STAMP := $(VENV)/.d2-installed
# Compile jobs for the C++ extension (one per core on the 2-core machines; set MAX_JOBS=N to change).
D2_JOBS ?= 1

.PHONY: venv d2 data book executed notebooks nbval chromium unit browser test lint clean

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir -r requirements.txt
	$(PY) -m pip install -q --no-cache-dir --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Build the wheel once per machine (a lock keeps two makes from building it at once; the wheel is
# moved into the cache only when complete), then install it without its optional deps (tensorboard, black).
$(D2_STAMP): $(STAMP) requirements-detectron2.txt
	$(PY) -m pip install -q --no-cache-dir -r requirements-detectron2.txt
	@mkdir -p $(D2_CACHE); \
	exec 9>$(D2_CACHE)/.lock; flock 9; \
	py=$$($(PY) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")'); \
	dir=$(D2_WHEELS)-$$py; \
	if ! ls $$dir/detectron2-*.whl >/dev/null 2>&1; then \
	  echo "building detectron2 from $(DETECTRON2_SRC) (MAX_JOBS=$(D2_JOBS); 3 to 10 minutes on 2 cores)"; \
	  start=$$(date +%s); tmp=$$dir.tmp-$$$$; rm -rf $$tmp; \
	  MAX_JOBS=$(D2_JOBS) $(PY) -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir -w $$tmp \
	    "$(DETECTRON2_SRC)" || { rm -rf $$tmp; exit 1; }; \
	  rm -rf $$dir; mv $$tmp $$dir; \
	  echo "detectron2 wheel built in $$(( $$(date +%s) - start )) s: $$(ls $$dir)"; \
	fi; \
	$(PY) -m pip install -q --no-deps --force-reinstall $$dir/detectron2-*.whl
	$(PY) -c 'import detectron2, detectron2._C, detectron2.model_zoo; print("detectron2", detectron2.__version__, "installed")'
	touch $(D2_STAMP)

d2: $(D2_STAMP)

data: venv d2
	$(PY) data/build.py --profile $(PROFILE)

# Every chapter is executed on every build (--all: Sphinx would otherwise re-read, and so re-execute,
# only the pages whose text changed); any cell error fails the build.
# Chapters train into $SRFKIT_RUNS_DIR (default here: the library-keyed folder above).
book: export SRFKIT_RUNS_DIR ?= $(BOOK_RUNS)
book: data
	@mkdir -p $(BUILD); start=$$(date +%s); \
	if [ "$$SRFKIT_RUNS_DIR" = "$(BOOK_RUNS)" ]; then \
	  find $(BUILD)/runs -mindepth 1 -maxdepth 1 ! -name $(LIB_HASH) -exec rm -rf {} + 2>/dev/null; fi; \
	echo "chapters train into $$SRFKIT_RUNS_DIR"; rm -rf $(EXECUTED_DIR); \
	$(VENV)/bin/jupyter-book build . --all --builder html 2>&1 | tee $(BUILD)/book-build.log; \
	status=$${PIPESTATUS[0]}; \
	echo "make book: jupyter-book took $$(( $$(date +%s) - start )) s (exit $$status)"; \
	exit $$status

# The executed notebooks the book build leaves (myst-nb writes each executed chapter there).
EXECUTED_DIR := $(BUILD)/jupyter_execute/book

# Every notebook chapter must have been executed by the book build, with no error output. The
# build itself already fails on a cell error (allow_errors: false, nb_execution_raise_on_error);
# this also catches a chapter the build did not execute (one missing from _toc.yml).
define CHECK_EXECUTED
import json, sys
from pathlib import Path
bad = []
for md in sys.argv[2:]:
    nb = Path(sys.argv[1]) / (Path(md).stem + ".ipynb")
    if not nb.is_file():
        bad.append(f"{md}: not executed by the book build (is it in _toc.yml?)")
        continue
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    errors = [o.get("ename", "?") for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        bad.append(f"{md}: error output in the executed notebook ({', '.join(errors)})")
print(f"executed chapters: {len(sys.argv) - 2 - len(bad)} of {len(sys.argv) - 2} ok")
sys.exit("\n".join(bad) if bad else 0)
endef
export CHECK_EXECUTED

executed:
	$(PY) -c "$$CHECK_EXECUTED" $(EXECUTED_DIR) $(NOTEBOOKS)

# nbval on its own (the design card's `pytest --nbval`; not part of `make test`, which executes each
# chapter once, in the book build): chapters converted to .ipynb under _build/, never committed.
notebooks: venv
	rm -rf $(NBVAL_DIR) && mkdir -p $(NBVAL_DIR)
	for f in $(NOTEBOOKS); do \
	  $(VENV)/bin/jupytext --quiet --to ipynb "$$f" -o "$(NBVAL_DIR)/$$(basename "$${f%.md}").ipynb" || exit 1; \
	done

# Runs every cell with the venv's own kernel; a cell error or a failed assert fails the test. No
# chapter marks outputs for comparison (NBVAL_CHECK_OUTPUT), so --nbval-lax checks exactly what the
# book build checks: that every cell runs without error.
nbval: notebooks data
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider --durations=0 \
	  --junitxml=$(BUILD)/nbval-report.xml $(NBVAL_DIR)

# Debian's Chromium for the browser checks, when we can install it (root + apt); failure is tolerated.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (Debian)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: the browser checks will be skipped"; \
	fi

unit: data
	MPLBACKEND=Agg $(PY) -m pytest tests --ignore=tests/test_browser.py

browser: chromium
	$(PY) -m pytest tests/test_browser.py

# Each chapter is executed once: by the book build. Before, nbval executed every chapter and then the
# book build executed every chapter again (nbval cannot save the outputs it computes, and the book
# needs them; nbval on an executed notebook re-executes it). No chapter compares outputs, so the
# book build (which fails on any cell error or failed assert) plus the `executed` check covers what
# nbval checked; `make nbval` still runs nbval on its own.
test: export SRFKIT_RUNS_DIR := $(TEST_RUNS)
test: venv d2 chromium
	rm -rf $(TEST_RUNS)
	@echo "disk before the tests: $$(df -h . | awk 'NR==2 {print $$4}') free"
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory lint && \
	$(MAKE) --no-print-directory unit && \
	$(MAKE) --no-print-directory book && \
	$(MAKE) --no-print-directory executed && \
	$(MAKE) --no-print-directory browser; \
	status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s (exit $$status)"; \
	echo "disk after the tests: $$(du -sh $(BUILD) | cut -f1) in $(BUILD), $$(df -h . | awk 'NR==2 {print $$4}') free"; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check srfkit tests data
	$(VENV)/bin/ruff format --check srfkit tests data

clean:
	rm -rf $(BUILD)
