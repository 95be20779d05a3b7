"""What deploy installs into the service's Python environment, and whether it resolves there.

The app patch reaches the service as one requirements line naming ``mongrate[app]``: by
default a wheel built from this checkout, copied to ``DIR/wheels/`` and named relatively
(``./wheels/mongrate-<version>-py3-none-any.whl[app]``, which pip reads from the service
folder, as the service's own ``pip install -r requirements.txt`` runs); or a given wheel; or a
requirement the service's pip can fetch itself (a private index, a URL). Never a bare
``mongrate`` version from the public index: another project owns that name there.

Before anything changes, ``pip install --dry-run --report`` runs with the service's own
interpreter on its requirements plus that line: the set pip would install, and what it would
change, or pip's conflict.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app_patch.service.driver import STABLE_ASYNC_PYMONGO

WHEELS = "wheels"
ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "README.md", "mongrate", "app_patch")
# What the router runs on, reported from the resolved set.
STACK = (
    "fastapi", "starlette", "pydantic", "pymongo", "motor", "pillow", "python-multipart",
    "pyjwt", "uvicorn",
)  # fmt: skip


class PackageError(Exception):
    """The package cannot be prepared or does not resolve; ``str(exc)`` is one line."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The canonical project name a requirements line installs, or None."""
    line = line.split(" #", 1)[0].strip()
    egg = re.search(r"#egg=([A-Za-z0-9._-]+)", line)
    if line.startswith("-"):
        return canonical(egg.group(1)) if egg else None
    target = line.split("[", 1)[0].strip()
    if "@" not in line and target.endswith(".whl"):  # a wheel by path or URL: name-version-...
        return canonical(re.split(r"[/\\]", target)[-1].split("-", 1)[0])
    named = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(@|[<>=!~;]|$)", line)
    return canonical(named.group(1)) if named else None


@dataclass(frozen=True)
class Package:
    """The requirements line for the app patch, and the wheel it names (if a local one)."""

    line: str
    wheel: Path | None = None  # copied to DIR/wheels/ by the install step

    @property
    def resolvable(self) -> str:
        """The same requirement for a resolution run from anywhere (absolute wheel path)."""
        return f"{self.wheel.resolve()}[app]" if self.wheel else self.line


def wheel_package(wheel: Path) -> Package:
    if not (wheel.is_file() and wheel.name.startswith("mongrate-") and wheel.suffix == ".whl"):
        raise PackageError(f"--wheel {wheel}: not a mongrate-*.whl file")
    return Package(f"./{WHEELS}/{wheel.name}[app]", wheel)


def prepare(wheel: str | None, requirement: str | None, build_dir: Path) -> Package:
    """The package from ``--wheel``, ``--requirement``, or a wheel built from this checkout."""
    if requirement:
        if requirement_name(requirement) != "mongrate":
            raise PackageError(f"--requirement {requirement!r} does not name mongrate")
        return Package(requirement.strip())
    if wheel:
        return wheel_package(Path(wheel))
    if not all((ROOT / name).exists() for name in SOURCES):
        raise PackageError(
            "this mongrate is not a source checkout, so no wheel can be built: pass --wheel "
            "FILE (a built mongrate wheel) or --requirement SPEC (one the service's pip can fetch)"
        )
    return wheel_package(build_wheel(ROOT, build_dir))


def build_wheel(root: Path, out_dir: Path) -> Path:
    """Build the mongrate wheel from a clean copy of the sources (no stale ``build/`` files)."""
    with tempfile.TemporaryDirectory(prefix="mongrate-src-") as tmp:
        src = Path(tmp)
        for name in SOURCES:
            if (root / name).is_dir():
                shutil.copytree(
                    root / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(root / name, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir)]
        proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise PackageError(f"building the mongrate wheel failed: {last_line(proc)}")
    built = sorted(out_dir.glob("mongrate-*.whl"))
    if not built:
        raise PackageError(f"pip wheel made no mongrate wheel in {out_dir}")
    return built[-1]


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last non-empty line a failed command wrote (its one-line error)."""
    for stream in (proc.stderr, proc.stdout):
        lines = [ln.strip() for ln in (stream or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return f"exit status {proc.returncode}"


@dataclass(frozen=True)
class Environment:
    """The service interpreter's Python version and installed distributions."""

    python: str
    version: tuple[int, ...]
    installed: dict[str, str]  # canonical name -> version


_DESCRIBE = (
    "import importlib.metadata as m, json, sys\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'installed': "
    "{d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}}))"
)


def describe(python: str, app_dir: Path) -> Environment:
    """What ``python`` has installed, as seen from the service folder (one subprocess)."""
    try:
        proc = subprocess.run(
            [python, "-c", _DESCRIBE], cwd=app_dir, capture_output=True, text=True, timeout=120
        )
    except OSError as exc:
        raise PackageError(f"--python {python}: cannot run it ({exc.strerror})") from None
    if proc.returncode != 0:
        raise PackageError(f"--python {python}: {last_line(proc)}")
    facts = json.loads(proc.stdout)
    installed = {canonical(k): v for k, v in facts["installed"].items()}
    return Environment(python, tuple(facts["version"]), installed)


@dataclass(frozen=True)
class Resolution:
    """What pip would do: new and changed distributions, and the resolved stack."""

    changes: list[tuple[str, str | None, str]]  # (name, installed version or None, new)
    stack: dict[str, str]  # STACK names present after the install -> version

    def driver(self) -> str:
        pymongo = self.stack.get("pymongo", "0")
        parts = tuple(int(p) for p in re.findall(r"\d+", pymongo)[:2])
        return "pymongo" if parts >= STABLE_ASYNC_PYMONGO else "motor"

    def lines(self) -> list[str]:
        new = [f"{n} {v}" for n, old, v in self.changes if old is None]
        changed = [f"{n} {old} -> {v}" for n, old, v in self.changes if old is not None]
        stack = ", ".join(f"{n} {v}" for n, v in self.stack.items())
        return [
            f"would install: {', '.join(new) or 'nothing new'}",
            f"would change: {', '.join(changed) or 'nothing installed'}",
            f"resolved stack: {stack}; async driver: {self.driver()}",
        ]


def resolve(
    env: Environment, app_dir: Path, requirements: Path, extra: str | None, workdir: Path
) -> Resolution:
    """``pip install --dry-run --report`` of ``requirements`` (plus the ``extra`` line) with
    the service's interpreter, from the service folder; raises with pip's conflict."""
    # Not --quiet: pip reports the causes of a conflict at its normal level.
    cmd = [env.python, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check"]
    report = workdir / "pip-report.json"
    cmd += ["--report", str(report)]
    if requirements.is_file():
        cmd += ["-r", str(requirements)]
    if extra:
        extra_file = workdir / "app-patch-requirements.txt"
        extra_file.write_text(extra + "\n", encoding="utf-8")
        cmd += ["-r", str(extra_file)]
    proc = subprocess.run(cmd, cwd=app_dir, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise PackageError(f"the requirements do not resolve: {pip_conflict(proc)}")
    installs = json.loads(report.read_text("utf-8")).get("install", [])
    changes = []
    after = dict(env.installed)
    for item in installs:
        meta = item.get("metadata", {})
        name, version = canonical(meta.get("name", "")), str(meta.get("version", ""))
        old = env.installed.get(name)
        if old != version:
            changes.append((name, old, version))
        after[name] = version
    stack = {n: after[n] for n in STACK if n in after}
    return Resolution(sorted(changes), stack)


def pip_conflict(proc: subprocess.CompletedProcess[str]) -> str:
    """pip's reason in one line: the "conflict is caused by" list when there is one."""
    text = f"{proc.stdout or ''}\n{proc.stderr or ''}"
    if "no such option: --report" in text or "no such option: --dry-run" in text:
        return "the service's pip is too old to dry-run (22.2+ needed): upgrade pip there"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "The conflict is caused by:" in line:
            causes = []
            for cause in lines[i + 1 :]:
                if not cause.strip():
                    break
                causes.append(cause.strip())
            return "conflict: " + "; ".join(causes)
    return last_line(proc)
