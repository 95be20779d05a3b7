# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-slow lint bench install ferretdb chromium clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[app,test]'
	touch $(STAMP)

install: $(STAMP)

ferretdb: $(STAMP)
	$(PY) -m mongrate.testing build-ferretdb

# Debian's Chromium for the browser test (root on these machines; skipped if present).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "make: could not install chromium; the browser test will be skipped"; }

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) ferretdb chromium lint
	$(PY) -m pytest -q -ra

test-fast: $(STAMP) ferretdb
	$(PY) -m pytest -q -ra -m "not slow"

test-slow: $(STAMP) ferretdb
	$(PY) -m pytest -q -ra -m slow

demo: $(STAMP) ferretdb
	$(PY) -m app_patch.tools.demo

# every bench in turn (each also runs alone: $(PY) bench/NAME.py), then one summary table
bench: $(STAMP) ferretdb
	$(PY) bench/summary.py

clean:
	rm -rf $(VENV) .mongrate build *.egg-info
