# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The engine's tests also run on the lowest pymongo setup.py allows (the original
# service's pin), in a venv of their own: pymongo 4.18+ and older ones differ (raw
# documents as memoryview or bytes).
LOW_PYMONGO := 4.6.1
LOWVENV     := .venv-lowpymongo
LOWPY       := $(LOWVENV)/bin/python
LOWSTAMP    := $(LOWVENV)/.installed-$(LOW_PYMONGO)

.PHONY: demo test test-fast test-slow test-lowpymongo lint bench install install-lowpymongo \
	ferretdb javaserver chromium clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[app,test]'
	touch $(STAMP)

$(LOWSTAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(LOWVENV)
	$(LOWPY) -m pip install --quiet --upgrade pip
	$(LOWPY) -m pip install --quiet -e '.[app,test]' 'pymongo==$(LOW_PYMONGO)'
	$(LOWPY) -c 'import pymongo; assert pymongo.version == "$(LOW_PYMONGO)", pymongo.version'
	touch $(LOWSTAMP)

install: $(STAMP)

install-lowpymongo: $(LOWSTAMP)

ferretdb: $(STAMP)
	$(PY) -m mongrate.testing build-ferretdb

# mongo-java-server, the second test server (Java 17 + Maven; jar in ~/.cache/mongrate).
javaserver: $(STAMP)
	$(PY) -m mongrate.testing build-javaserver

# Debian's Chromium for the browser test (root on these machines; skipped if present).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "make: could not install chromium; the browser test will be skipped"; }

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) $(LOWSTAMP) ferretdb javaserver chromium lint
	$(PY) -m pytest -q -ra
	$(MAKE) --no-print-directory test-lowpymongo

# tests/engine and tests/versions (not the app's) on pymongo $(LOW_PYMONGO), without the
# slow ones: they were half of this run's time (the Alembic differential alone, pure graph
# logic, a third), and `make test-slow` runs them on the newest pymongo.
test-lowpymongo: $(LOWSTAMP) ferretdb
	@echo "== tests/engine and tests/versions on pymongo $(LOW_PYMONGO) =="
	$(LOWPY) -m pytest -q -ra -m "not slow" --mongrate-server ferretdb tests/engine tests/versions

test-fast: $(STAMP) ferretdb javaserver
	$(PY) -m pytest -q -ra -m "not slow"

test-slow: $(STAMP) ferretdb javaserver
	$(PY) -m pytest -q -ra -m slow

demo: $(STAMP) ferretdb
	$(PY) -m app_patch.tools.demo

# every bench in turn (each also runs alone: $(PY) bench/NAME.py), then one summary table
bench: $(STAMP) ferretdb javaserver
	$(PY) bench/summary.py

clean:
	rm -rf $(VENV) $(LOWVENV) .mongrate build *.egg-info
