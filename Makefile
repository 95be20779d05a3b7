# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-slow lint bench install ferretdb javaserver chromium clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[app,test]'
	touch $(STAMP)

install: $(STAMP)

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

test: $(STAMP) ferretdb javaserver chromium lint
	$(PY) -m pytest -q -ra

test-fast: $(STAMP) ferretdb javaserver
	$(PY) -m pytest -q -ra -m "not slow"

test-slow: $(STAMP) ferretdb javaserver
	$(PY) -m pytest -q -ra -m slow

demo: $(STAMP) ferretdb
	$(PY) -m app_patch.tools.demo

bench: $(STAMP) ferretdb javaserver
	-$(PY) bench/graph.py
	-$(PY) bench/thumbs.py
	-$(PY) bench/history.py
	-$(PY) bench/thumbs_http.py
	-$(PY) bench/migrate.py
	-$(PY) bench/authoring.py
	-$(PY) bench/schema_check.py
	-$(PY) bench/fleet.py

clean:
	rm -rf $(VENV) .mongrate build *.egg-info
