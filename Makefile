# The README's two commands: `make demo` and `make test`. Both create .venv first when needed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The exact versions the venv gets (pip constraints); the package itself asks only for ranges (pyproject.toml).
LOCK   := requirements/lock.txt

# Our machines and CI keep real data beside the checkout; elsewhere cnnlab uses ~/.cache/cnnlab.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export CNNLAB_DATA ?= $(SHARED_DATA)
endif

.PHONY: demo test test-slow bench venv clean browser course dist

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# $(LOCK) rewritten from the venv as it is now, its header kept: after installing a changed dependency.
.PHONY: lock
lock:
	{ sed -n '/^#/!q;p' $(LOCK); $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } \
		> $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# The course CNN with a 2-minute budget, then its HTML report (the path is printed last).
demo: $(STAMP)
	@run=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/cnnlab train --config configs/demo.yaml --out $$run && \
	$(BIN)/cnnlab report $$run -o $$run/report --title "make demo: the course CNN in 2 minutes"

# The course's five tasks in a small budget (20 minutes; `cnnlab course --minutes 60` for the full plan).
course: $(STAMP)
	$(BIN)/cnnlab course --minutes 20 --out runs/course-20min

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n 2

# Headless Chromium for tests/test_browser.py (Debian packages; see scripts/ensure-browser).
browser:
	@scripts/ensure-browser

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The wheel and the sdist a release publishes, in dist/ (built with the venv's setuptools: no download;
# tests/test_packaging.py checks that both hold every package file and that the wheel runs when installed).
dist: $(STAMP)
	rm -rf dist build src/*.egg-info  # stale build output would slip into the new files
	$(BIN)/python -m build --no-isolation --outdir dist .

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache test-artifacts

# The docs site in site/ (MkDocs + Material; open site/index.html): the five notebooks executed into
# docs/notebooks/ (one that fails to run fails this), then `mkdocs build --strict` (any warning fails it). The CLI
# reference and the benchmark tables are generated at build time (docs/hooks/cnnlab_docs.py); screenshots of a few
# pages go to test-artifacts/docs/ where Chromium is installed (scripts/screenshot_docs.py).
.PHONY: docs
docs: $(STAMP)
	rm -rf docs/notebooks
	$(BIN)/python scripts/execute_notebooks.py --out docs/notebooks
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site
	$(BIN)/python scripts/screenshot_docs.py
