"""pytest plugin (auto-loaded once mongrate is installed): real servers for migration tests.

Fixtures:
- ``mongo_server``: the name of the test server a test runs on: ``ferretdb`` (FerretDB 1.24
  on SQLite) or ``javaserver`` (mongo-java-server, memory backend), or ``url`` for
  ``$MONGRATE_TEST_URL``. With more than one server configured, every test that uses a
  server fixture runs once per server (ids ``[ferretdb]``, ``[javaserver]``).
- ``mongo_server_url``: session-wide server URL with no database. ``$MONGRATE_TEST_URL``
  if set (it replaces every configured server), else the server started for the session.
- ``mongo_url``: that URL with a fresh database name in its path, dropped afterwards.
- ``mongo_client`` / ``mongo_db``: a pymongo client and the test's own ``Database``.
- ``mongo7_url``: a ``mongo:7`` container via testcontainers, skipped where no Docker
  engine answers (use it for fast paths FerretDB v1 lacks, such as transactions).

Which servers: ``mongrate_servers`` in the pytest ini (default ``ferretdb``) or
``--mongrate-server NAME`` (repeatable). Markers:
- ``@pytest.mark.mongo_servers("ferretdb", ...)``: the test runs on these servers only
  (not generated for the others; skipped if the one configured is another), e.g. a
  directory kept to one server for time. Name ``url`` to keep it under $MONGRATE_TEST_URL.
- ``@pytest.mark.skip_server("javaserver", reason="...")``: the test does not hold on that
  server; it is generated there and skipped with the reason.

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
from mongrate.testing.server import SERVERS, ServerUnavailable, docker_available, make_server

#: ``mongo_server`` when $MONGRATE_TEST_URL names the server
URL_SERVER = "url"


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
    group.addoption("--mongrate-server", action="append", dest="mongrate_servers",
                    default=None, choices=SERVERS,
                    help="a test server to run the server tests on (repeatable; default: "
                         "the ini's mongrate_servers, else ferretdb)")
    parser.addini("mongrate_servers", f"test servers to run on, of {', '.join(SERVERS)}",
                  type="args", default=["ferretdb"])


def configured_servers(config: pytest.Config) -> list[str]:
    """The servers the server tests run on, in order; ``[url]`` under $MONGRATE_TEST_URL."""
    if os.environ.get("MONGRATE_TEST_URL"):
        return [URL_SERVER]
    names = config.getoption("mongrate_servers") or config.getini("mongrate_servers")
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise pytest.UsageError(f"mongrate_servers: unknown server {unknown[0]!r}; choose "
                                f"from {', '.join(SERVERS)}")
    return list(dict.fromkeys(names))


@pytest.hookimpl(trylast=True)  # after conftest hooks, which may add a mongo_servers marker
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mongo_server" not in metafunc.fixturenames:
        return
    servers = configured_servers(metafunc.config)
    if len(servers) < 2:
        return  # one server: ids stay as they were
    only = metafunc.definition.get_closest_marker("mongo_servers")
    if only is not None:
        servers = [s for s in servers if s in only.args]
    # session scope: pytest groups the tests by server, each server starts once
    metafunc.parametrize("mongo_server", servers, indirect=True, scope="session")


def _item_server(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "mongo_server" in callspec.params:
        return callspec.params["mongo_server"]
    if "mongo_server" in getattr(item, "fixturenames", ()):
        return configured_servers(item.config)[0]
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    server = _item_server(item)
    if server is None:
        return
    only = item.get_closest_marker("mongo_servers")
    if only is not None and server not in only.args:  # one server configured: not generated
        pytest.skip(f"{server}: runs on {', '.join(only.args)} only")
    for mark in item.iter_markers("skip_server"):
        if server in mark.args:
            reason = mark.kwargs.get("reason") or "does not hold on this server"
            pytest.skip(f"{server}: {reason}")


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
    """Register the markers. With no conftest.py to sit beside, the built-in tests are
    collected from their own file (they run, without the project's ``mongrate_seed``)."""
    config.addinivalue_line("markers", "mongo_servers(*names): run on these test servers only")
    config.addinivalue_line("markers", "skip_server(*names, reason): the test does not hold "
                                       "on these test servers; skipped there with the reason")
    if _builtin_wanted(config):
        from pathlib import Path

        roots = [Path(a.split("::")[0]) for a in config.args] or [Path(config.rootpath)]
        if not any((r if r.is_dir() else r.parent).glob("**/conftest.py") for r in roots):
            from mongrate.testing import builtin

            config.args.append(builtin.__file__)


def _server_url_without_db(url: str) -> str:
    return with_database(url, "") if database_from_url(url) else url


class _Servers:
    """The session's test servers, started on first use and stopped at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._running: dict = {}
        self._clients: dict = {}

    def url(self, name: str) -> str:
        if name == URL_SERVER:
            return _server_url_without_db(os.environ["MONGRATE_TEST_URL"])
        if name not in self._running:
            server = make_server(name, self._tmp.mktemp(name))
            try:
                server.start()
            except ServerUnavailable as exc:
                pytest.exit(f"mongrate test server {name} unavailable: {exc}", returncode=3)
            self._running[name] = server
        return self._running[name].url

    def client(self, name: str):
        if name not in self._clients:
            from pymongo import MongoClient

            from mongrate.mongo.witness import CommandTally

            # DATETIME_AUTO: a date outside Python's range (valid BSON) reads as DatetimeMS
            self._clients[name] = MongoClient(
                self.url(name), serverSelectionTimeoutMS=10_000, tz_aware=False,
                datetime_conversion="DATETIME_AUTO", event_listeners=[CommandTally()])
        return self._clients[name]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for server in self._running.values():
            server.stop()


@pytest.fixture(scope="session")
def _mongrate_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    servers = _Servers(tmp_path_factory)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def mongo_server(request: pytest.FixtureRequest) -> str:
    """The test server's name (``ferretdb``, ``javaserver``, or ``url``)."""
    return getattr(request, "param", None) or configured_servers(request.config)[0]


@pytest.fixture(scope="session")
def mongo_server_url(mongo_server: str, _mongrate_servers: _Servers) -> str:
    return _mongrate_servers.url(mongo_server)


@pytest.fixture(scope="session")
def mongo_client(mongo_server: str, _mongrate_servers: _Servers):
    return _mongrate_servers.client(mongo_server)


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
