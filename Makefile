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

# The tests that reach what differs between pymongo versions (raw documents as bytes or
# memoryview, dates out of Python's range, binary subtypes, the driver calls the data path
# makes) on pymongo $(LOW_PYMONGO), not slow, on FerretDB; the rest of tests/engine (graph,
# CLI parsing, output) is the same code on any driver and ran on the newest above.
LOW_PYMONGO_TESTS := tests/engine/test_raw_documents.py tests/engine/test_data_ops.py \
	tests/engine/test_update_eval.py tests/engine/test_update_fallback.py \
	tests/engine/test_engine_hostile.py tests/engine/test_killpoints.py \
	tests/engine/test_backup_index_ops.py tests/engine/test_testing_kit.py \
	tests/engine/test_strategy_probe.py tests/engine/test_witness.py \
	tests/versions/test_roundtrip.py
# Not again here (each minutes long, the same engine code on any driver): the kill sweeps
# but the copy-back one (raw documents copied both ways; the in-place ones are strict
# xfails on FerretDB, their resumed run is checked by its own test) and the revisions' SIGKILL
# resumes (the kill tests above resume on this pymongo).
LOW_PYMONGO_SKIP := \
	'tests/engine/test_killpoints.py::test_every_write_survives_a_kill_after_it[rewrite-items]' \
	'tests/engine/test_killpoints.py::test_every_write_survives_a_kill_after_it[in_place-' \
	tests/versions/test_roundtrip.py::test_sigkill_then_resumed_upgrade_equals_a_clean_run

test-lowpymongo: $(LOWSTAMP) ferretdb
	@echo "== the codec and driver tests on pymongo $(LOW_PYMONGO) =="
	$(LOWPY) -m pytest -q -ra -m "not slow" --mongrate-server ferretdb $(LOW_PYMONGO_TESTS) \
	  $(addprefix --deselect ,$(LOW_PYMONGO_SKIP))

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
