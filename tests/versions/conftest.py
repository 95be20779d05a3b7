"""Helpers for the image-rendering revision tests: an op per revision, seeded data, the CLI.

Everything runs against the real test server (FerretDB). Revisions are loaded from
/work/main/versions exactly as the engine loads them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "versions"
if str(ROOT) not in sys.path:  # what prepend_sys_path = . does for the engine
    sys.path.insert(0, str(ROOT))

from app_patch.testdata.seed import SeedReport, seed  # noqa: E402
from mongrate.config import Config  # noqa: E402
from mongrate.testing.kit import run_revision as kit_run_revision  # noqa: E402

BACKUP, SCHEMA, LINK, INDEXES = "4c1d7e0a9b21", "7e3f05b6c8d2", "9a6b41d3e5f7", "c2d8e9f0a1b3"
CHAIN = (BACKUP, SCHEMA, LINK, INDEXES)
CFG = Config()
#: Small but with every untidy case (the seeder forces each one at least once).
SMALL = {"sessions": 24, "messages_per_session": 12, "uploads": 70}
DATA = ("chat_messages", "file_uploads", "chat_sessions", "fs.files", "fs.chunks")

_modules: dict[str, ModuleType] = {}


def revision_module(rev: str) -> ModuleType:
    """The revision file's module, imported once (the way ScriptDirectory does)."""
    if rev not in _modules:
        (path,) = VERSIONS.glob(f"{rev}_*.py")
        spec = importlib.util.spec_from_file_location(f"test_revision_{rev}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[rev] = module
    return _modules[rev]


def run_revision(db, rev: str, direction: str = "upgrade", batch_size: int = 25,
                 **kwargs: Any) -> dict:
    """Call one revision's upgrade/downgrade directly (mongrate.testing's kit); return its
    reported counts."""
    return kit_run_revision(db, revision_module(rev), direction, batch_size=batch_size,
                            **kwargs)


def user_collections(db) -> list[str]:
    return sorted(n for n in db.list_collection_names() if not n.startswith("mongrate"))


def dump(db, names: list[str] | None = None) -> dict[str, Any]:
    """Every non-mongrate collection: documents (sorted by _id) and index specs."""
    out: dict[str, Any] = {}
    for name in names or user_collections(db):
        docs = sorted(db[name].find(), key=lambda d: repr(d["_id"]))
        indexes = {k: {kk: vv for kk, vv in v.items() if kk not in ("v", "ns")}
                   for k, v in db[name].index_information().items()}
        out[name] = {"docs": docs, "indexes": indexes}
    return out


@pytest.fixture
def seeded(mongo_db) -> SeedReport:
    report = seed(mongo_db, **SMALL, seed=3)
    missing = [case for case, n in report.cases.items() if n == 0]
    assert not missing, f"the seed lacks untidy cases {missing}"
    return report


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """``mongrate`` against the test database, with this repository's versions/."""

    def __init__(self, path: Path, url: str, batch_size: int = 25, **settings: str):
        self.ini = path / "mongrate.ini"
        self.ini.write_text(
            "[mongrate]\n"
            f"url = {url}\n"
            f"script_location = {VERSIONS}\n"
            f"prepend_sys_path = {ROOT}\n"
            "lock_lease_seconds = 4\n"
            f"batch_size = {batch_size}\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        self.path = path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mongrate", "-c", str(self.ini), *args]

    def run(self, *args: str, timeout: float = 300, prelude: str = "") -> Result:
        """The real console command in a child process (``prelude``: Python run first in
        that process, e.g. to arrange a SIGKILL at a chosen point)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if prelude:
            code = (f"{prelude}\nimport sys\nfrom mongrate.cli import main\n"
                    f"main({list(args)!r})")
            cmd = [sys.executable, "-c", code]
            env["MONGRATE_CONFIG"] = str(self.ini)
        else:
            cmd = self.command(*args)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.path,
                              timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path, mongo_url) -> Cli:
    return Cli(tmp_path, mongo_url)
