"""Throwaway MongoDB-compatible servers for tests and demos.

FerretDB v1.24.2 (SQLite backend) is built from its Go module with the machine's Go
into a user cache, then started on a free 127.0.0.1 port with its data in a directory
we own. mongo-java-server (memory backend), the second test server, is built the same
way from a small Maven launcher of ours with the machine's Java and Maven. Unlike
FerretDB 1.x it updates by ``_id`` through an index, so the write-strategy probe picks
``in_place`` there, the path production MongoDB takes. ``MONGRATE_TEST_URL`` replaces
all of this with a server of your choosing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FERRETDB_VERSION = "v1.24.2"
_MODULE_DIR = Path(__file__).with_name("ferretdb")
# Keep in step with <mongo-java-server.version> in javaserver/pom.xml.
JAVASERVER_VERSION = "1.47.0"
_LAUNCHER_DIR = Path(__file__).with_name("javaserver")
_LAUNCHER_FILES = ("pom.xml", "MongrateJavaServer.java")
# The test servers by name: the ``server`` parameter of the pytest fixtures.
SERVERS = ("ferretdb", "javaserver")


class ServerUnavailable(RuntimeError):
    """The test server could not be built or started; the message says what is missing."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mongrate"


def ferretdb_binary() -> Path:
    """Path of the FerretDB binary (``$MONGRATE_FERRETDB_BIN`` or the user cache)."""
    env = os.environ.get("MONGRATE_FERRETDB_BIN")
    if env:
        return Path(env)
    return cache_dir() / f"ferretdb-{FERRETDB_VERSION}"


def build_ferretdb(quiet: bool = False) -> Path:
    """Build FerretDB from its Go module unless the cached binary exists."""
    target = ferretdb_binary()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise ServerUnavailable(
            "cannot build FerretDB: the Go toolchain ('go') is not on PATH; install Go >= 1.22 "
            "or set MONGRATE_TEST_URL to a running MongoDB"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build from a copy: the package directory may be read-only (site-packages).
    with tempfile.TemporaryDirectory(prefix="mongrate-ferretdb-build-") as work:
        for name in ("go.mod", "go.sum", "main.go"):
            shutil.copy(_MODULE_DIR / name, Path(work) / name)
        tmp_out = target.with_name(target.name + f".tmp{os.getpid()}")
        env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
        if not quiet:
            print(f"mongrate: building FerretDB {FERRETDB_VERSION} with {go} (once)...", file=sys.stderr)
        proc = subprocess.run(
            [go, "build", "-trimpath", "-o", str(tmp_out), "."],
            cwd=work, env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise ServerUnavailable(
                f"building FerretDB {FERRETDB_VERSION} failed (go build exit {proc.returncode}); "
                f"check that the Go module proxy is reachable:\n{tail}"
            )
        os.replace(tmp_out, target)  # atomic: concurrent builders cannot see half a file
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log: Path,
                   name: str = "FerretDB") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(
                f"{name} exited with code {proc.returncode} at start: {log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class _ServerProcess:
    """A test server process on 127.0.0.1 and a free port, its files in ``data_dir``
    (``None``: a temporary directory removed at stop; a given directory is kept)."""

    name = "server"

    def __init__(self, data_dir: str | os.PathLike | None = None, port: int | None = None):
        self._tmp = (None if data_dir
                     else tempfile.TemporaryDirectory(prefix=f"mongrate-{self.name}-"))
        self.data_dir = Path(data_dir or self._tmp.name)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> _ServerProcess:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> _ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FerretDBServer(_ServerProcess):
    """A FerretDB process with its SQLite files in ``data_dir``: a given directory is
    kept, so a demo database survives between runs."""

    name = "ferretdb"

    def start(self, timeout: float = 30.0) -> FerretDBServer:
        binary = build_ferretdb()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "ferretdb.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--listen-addr=127.0.0.1:{self.port}",
                    "--handler=sqlite",
                    f"--sqlite-url=file:{self.data_dir}/",
                    "--telemetry=disable",
                    "--debug-addr=-",
                    "--log-level=error",
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the test run must not kill it mid-write
            )
        _wait_for_port(self.port, self.proc, timeout, log)
        return self


def _launcher_digest() -> str:
    h = hashlib.sha256()
    for name in _LAUNCHER_FILES:
        h.update((_LAUNCHER_DIR / name).read_bytes())
    return h.hexdigest()[:10]


def javaserver_jar() -> Path:
    """Path of the launcher jar (``$MONGRATE_JAVASERVER_JAR`` or the user cache).

    The name carries a digest of the launcher's sources, so an edited launcher is rebuilt
    instead of a stale jar being started.
    """
    env = os.environ.get("MONGRATE_JAVASERVER_JAR")
    if env:
        return Path(env)
    return cache_dir() / f"mongo-java-server-{JAVASERVER_VERSION}-{_launcher_digest()}.jar"


def build_javaserver(quiet: bool = False) -> Path:
    """Build the mongo-java-server launcher (one runnable jar) unless it is cached."""
    target = javaserver_jar()
    if target.exists():
        return target
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise ServerUnavailable(
            f"cannot build mongo-java-server: {' and '.join(missing)} not on PATH; install "
            "Java >= 17 and Maven >= 3.8, or set MONGRATE_TEST_URL to a running MongoDB"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mongrate-javaserver-build-") as work:
        for name in _LAUNCHER_FILES:
            shutil.copy(_LAUNCHER_DIR / name, Path(work) / name)
        if not quiet:
            print(f"mongrate: building mongo-java-server {JAVASERVER_VERSION} with Maven (once)...",
                  file=sys.stderr)
        proc = subprocess.run(
            ["mvn", "-q", "-B", "package"], cwd=work, capture_output=True, text=True,
            stdin=subprocess.DEVNULL,
        )
        built = Path(work) / "target" / "mongrate-javaserver.jar"
        if proc.returncode != 0 or not built.exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise ServerUnavailable(
                f"building mongo-java-server {JAVASERVER_VERSION} failed (mvn exit "
                f"{proc.returncode}); check that Maven Central is reachable:\n{tail}"
            )
        tmp_out = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.copy(built, tmp_out)
        os.replace(tmp_out, target)  # atomic: concurrent builders cannot see half a file
    return target


def javaserver_wire_version() -> int:
    """The wire version the launcher declares: the lowest this pymongo accepts, at least 8.

    mongo-java-server reports 8 by default and answers ``isMaster`` but not ``hello``;
    pymongo >= 4.14 refuses a server below wire version 9, and drivers switch to
    ``hello`` from 13 on, so the declared version stays in [8, 12].
    """
    from pymongo.common import MIN_SUPPORTED_WIRE_VERSION

    wire = max(8, MIN_SUPPORTED_WIRE_VERSION)
    if wire >= 13:
        raise ServerUnavailable(
            f"this pymongo needs wire version >= {wire}, where it speaks 'hello', which "
            "mongo-java-server does not answer; use a pymongo < 5 that accepts wire version 12"
        )
    return wire


class JavaServer(_ServerProcess):
    """mongo-java-server (memory backend); its data lives and dies with it.

    ``data_dir`` only holds its log. The JVM heap is capped (``$MONGRATE_JAVASERVER_HEAP``,
    default 2g) since every document of every test database stays in memory.
    """

    name = "javaserver"

    def start(self, timeout: float = 60.0) -> JavaServer:
        jar = build_javaserver()
        java = shutil.which("java")
        if java is None:
            raise ServerUnavailable("cannot start mongo-java-server: 'java' is not on PATH")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "javaserver.log"
        heap = os.environ.get("MONGRATE_JAVASERVER_HEAP", "2g")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [java, f"-Xmx{heap}", "-XX:+UseSerialGC", "-jar", str(jar), str(self.port),
                 str(javaserver_wire_version())],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_for_port(self.port, self.proc, timeout, log, name="mongo-java-server")
        return self


def make_server(name: str, data_dir: str | os.PathLike | None = None,
                port: int | None = None) -> FerretDBServer | JavaServer:
    """A test server by name: ``ferretdb`` or ``javaserver`` (see :data:`SERVERS`)."""
    if name == "ferretdb":
        return FerretDBServer(data_dir, port=port)
    if name == "javaserver":
        return JavaServer(data_dir, port=port)
    raise ValueError(f"unknown test server {name!r}: choose one of {', '.join(SERVERS)}")


@contextmanager
def server_url(data_dir: str | os.PathLike | None = None,
               server: str = "ferretdb") -> Iterator[str]:
    """``$MONGRATE_TEST_URL`` if set, else the URL of a test server started for the block
    (``server``: ``ferretdb`` or ``javaserver``)."""
    env = os.environ.get("MONGRATE_TEST_URL")
    if env:
        yield env
        return
    with make_server(server, data_dir) as srv:
        yield srv.url


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
