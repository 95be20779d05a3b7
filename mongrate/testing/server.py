"""Throwaway MongoDB-compatible servers for tests and demos.

FerretDB v1.24.2 (SQLite backend) is built from its Go module with the machine's Go
into a user cache, then started on a free 127.0.0.1 port with its data in a directory
we own. ``MONGRATE_TEST_URL`` replaces all of this with a server of your choosing.
"""

from __future__ import annotations

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


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(
                f"FerretDB exited with code {proc.returncode} at start: {log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"FerretDB did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class FerretDBServer:
    """A FerretDB process on 127.0.0.1 with its SQLite files in ``data_dir``.

    ``data_dir=None`` uses a temporary directory removed at stop; a given directory is
    kept, so a demo database survives between runs.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, port: int | None = None):
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="mongrate-ferretdb-")
        self.data_dir = Path(data_dir or self._tmp.name)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

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

    def __enter__(self) -> FerretDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def server_url(data_dir: str | os.PathLike | None = None) -> Iterator[str]:
    """``$MONGRATE_TEST_URL`` if set, else the URL of a FerretDB started for the block."""
    env = os.environ.get("MONGRATE_TEST_URL")
    if env:
        yield env
        return
    with FerretDBServer(data_dir) as server:
        yield server.url


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
