"""A throwaway mongrate project per test: mongrate.ini + versions/ + helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import bson
import pytest
from bson import Binary

from mongrate.cli import main

ROOT = Path(__file__).resolve().parents[2]


def uuid_binary(data: bytes) -> Binary:
    """A UUID-subtype (4) binary of ``data``, which need not be 16 bytes long, where the
    installed pymongo can decode one; pymongo 4.6's C decoder refuses any such document
    ("invalid length or type code"), so no application on it can read one: there the
    same bytes under a user-defined subtype (0x80) stand in."""
    odd = Binary(data, 4)
    try:
        bson.decode(bson.encode({"b": odd}))
        return odd
    except bson.errors.InvalidBSON:
        return Binary(data, 0x80)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Project:
    def __init__(self, path: Path, url: str, capsys):
        self.path = path
        self.url = url
        self.ini = path / "mongrate.ini"
        self.versions = path / "versions"
        self._capsys = capsys

    def write_ini(self, **extra: str) -> None:
        settings = {"url": self.url, "script_location": "versions", "lock_lease_seconds": "3",
                    "batch_size": "50", **extra}
        lines = ["[mongrate]"] + [f"{k} = {v}" for k, v in settings.items()]
        self.ini.write_text("\n".join(lines) + "\n")

    def add(self, rev: str, down: str | tuple | None, *, body_up: str = "pass",
            body_down: str = "op.restore_undo()", labels=None, depends_on=None,
            message: str | None = None, module: str = "") -> Path:
        path = self.versions / f"{rev}_r.py"
        up = textwrap.indent(textwrap.dedent(body_up).strip() or "pass", "    ")
        down_body = textwrap.indent(textwrap.dedent(body_down).strip() or "pass", "    ")
        path.write_text(
            f'"""{message or "revision " + rev}\n\nRevision ID: {rev}\n'
            f'Create Date: 2026-11-24 00:00:00\n"""\n'
            "import time  # noqa: F401 (bodies may sleep)\n\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\n"
            f"branch_labels = {labels!r}\ndepends_on = {depends_on!r}\n{module}\n\n"
            f"def upgrade(op):\n{up}\n\n\ndef downgrade(op):\n{down_body}\n"
        )
        return path

    def run(self, *args: str) -> Result:
        """In-process CLI call (fast); output captured."""
        self._capsys.readouterr()
        try:
            main(["-c", str(self.ini), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def spawn(self, *args: str, **kwargs) -> subprocess.Popen:
        """The real console command in a child process."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen([sys.executable, "-m", "mongrate", "-c", str(self.ini), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=self.path, **kwargs)

    def run_child(self, *args: str, timeout: float = 120) -> Result:
        proc = self.spawn(*args)
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err)


@pytest.fixture
def project(tmp_path, mongo_url, capsys) -> Project:
    p = Project(tmp_path, mongo_url, capsys)
    p.versions.mkdir()
    p.write_ini()
    return p
