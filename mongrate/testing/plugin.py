"""pytest plugin (auto-loaded once mongrate is installed): real servers for migration tests.

Fixtures:
- ``mongo_server_url``: session-wide server URL with no database. ``$MONGRATE_TEST_URL``
  if set, else a FerretDB (SQLite) started for the session.
- ``mongo_url``: that URL with a fresh database name in its path, dropped afterwards.
- ``mongo_client`` / ``mongo_db``: a pymongo client and the test's own ``Database``.
- ``mongo7_url``: a ``mongo:7`` container via testcontainers, skipped where no Docker
  engine answers (use it for fast paths FerretDB v1 lacks, such as transactions).

``--mongrate-tests`` (or ``mongrate_tests = true`` in the pytest ini) adds the built-in
migration tests of :mod:`mongrate.testing.builtin` to the run: single head, up and down,
and the stairway; ``--mongrate-config`` / ``mongrate_config`` names the project's ini.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from mongrate.config import database_from_url, with_database
from mongrate.testing.server import FerretDBServer, ServerUnavailable, docker_available


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mongrate")
    group.addoption("--mongrate-tests", action="store_true", dest="mongrate_tests",
                    help="add mongrate's built-in migration tests (single head, up and "
                         "down, stairway) for the project's revisions")
    group.addoption("--mongrate-config", dest="mongrate_config", default=None,
                    help="the project's mongrate.ini for the built-in tests")
    parser.addini("mongrate_tests", "add mongrate's built-in migration tests", type="bool",
                  default=False)
    parser.addini("mongrate_config", "the project's mongrate.ini for the built-in tests",
                  default="")


def _builtin_wanted(config: pytest.Config) -> bool:
    return bool(config.getoption("mongrate_tests") or config.getini("mongrate_tests"))


class BuiltinTests(pytest.Module):
    """mongrate.testing.builtin, collected as if it sat beside the project's first
    conftest.py, so that the project's fixtures (``mongrate_seed``) reach it."""

    def _getobj(self):
        from mongrate.testing import builtin

        return builtin


def pytest_collect_file(file_path, parent):
    config = parent.config
    if (file_path.name == "conftest.py" and _builtin_wanted(config)
            and not getattr(config, "_mongrate_builtin", False)):
        config._mongrate_builtin = True
        return BuiltinTests.from_parent(parent, path=file_path.with_name("test_mongrate.py"))
    return None


def pytest_configure(config: pytest.Config) -> None:
    """With no conftest.py to sit beside, the built-in tests are collected from their own
    file (they run, without the project's ``mongrate_seed``)."""
    if _builtin_wanted(config):
        from pathlib import Path

        roots = [Path(a.split("::")[0]) for a in config.args] or [Path(config.rootpath)]
        if not any((r if r.is_dir() else r.parent).glob("**/conftest.py") for r in roots):
            from mongrate.testing import builtin

            config.args.append(builtin.__file__)


def _server_url_without_db(url: str) -> str:
    return with_database(url, "") if database_from_url(url) else url


@pytest.fixture(scope="session")
def mongo_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("MONGRATE_TEST_URL")
    if env:
        yield _server_url_without_db(env)
        return
    data_dir = tmp_path_factory.mktemp("ferretdb")
    server = FerretDBServer(data_dir)
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.exit(f"mongrate test server unavailable: {exc}", returncode=3)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_server_url: str):
    from pymongo import MongoClient

    # DATETIME_AUTO: a date outside Python's range (valid BSON) reads as DatetimeMS
    client = MongoClient(mongo_server_url, serverSelectionTimeoutMS=10_000, tz_aware=False,
                         datetime_conversion="DATETIME_AUTO")
    yield client
    client.close()


@pytest.fixture
def mongo_url(mongo_server_url: str, mongo_client) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield with_database(mongo_server_url, name)
    mongo_client.drop_database(name)


@pytest.fixture
def mongo_db(mongo_url: str, mongo_client):
    return mongo_client[database_from_url(mongo_url)]


@pytest.fixture(scope="session")
def mongo7_url() -> Iterator[str]:
    if not docker_available():
        pytest.skip("no Docker engine answers here: the mongo:7 testcontainer cannot start")
    try:
        from testcontainers.mongodb import MongoDbContainer
    except ImportError:
        pytest.skip("testcontainers is not installed (pip install 'mongrate[test]')")
    with MongoDbContainer("mongo:7") as container:
        yield _server_url_without_db(container.get_connection_url())
