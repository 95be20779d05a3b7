"""Deploy the image-rendering change into a FastAPI + MongoDB service, or roll it back.

``python -m app_patch.tools.deploy --app-dir DIR [--python PY] [--wheel FILE | --requirement
SPEC] [--dry-run] [--skip-backup] [--skip-install] [--skip-restart] [--restart-cmd CMD]
[--mongrate-config FILE] [--main FILE] [--rollback]``

Two Python environments may take part: the service's (``--python``, default the one running
deploy), which gets the app patch and serves the router, and the one running deploy, which
runs the mongrate engine on the database. They can be one and the same: the engine runs on the
service's pymongo 4.6 as well.

The guide's steps, in order: validate (the service's Python and Pillow, the database the
service uses: ``MONGODB_URL`` / ``MONGODB_DATABASE_NAME`` from the environment, else
``DIR/.env``, a database in the URL path winning; the mongrate config; the ``app = FastAPI(``
line; and, unless ``--skip-install``, that the service's requirements plus ``mongrate[app]``
resolve in its environment: the set pip would install, or pip's conflict, see
:mod:`app_patch.tools.packages`) without changing anything; back up the app package and
requirements.txt to ``DIR/backups/pre_image_rendering_<YYYYMMDD_HHMMSS>/`` with a manifest of
the database heads (when something will change); add the ``mongrate[app]`` line once (with its
wheel in ``DIR/wheels/``) and ``pip install -r`` with the service's interpreter; include the
router right after ``app = FastAPI(...)`` (so its routes win over older ones on the same
paths) and import the patched main module there; stop the service if revisions are pending
(the guide's Step 1: they rewrite collections); ``mongrate upgrade head``; restart the service.

Validation errors exit 2 having changed nothing. A later failure puts the edited files back
byte for byte, downgrades the database to the heads it had, drops this run's backup and
exits 1 (packages pip installed stay), restarting the service if it stopped it.
``--rollback`` undoes the newest deploy not yet rolled back: database to its manifest's
heads first (service stopped), then the code, then the restart.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app_patch.service.settings import DEFAULT_DATABASE, DEFAULT_URL
from app_patch.tools import packages
from app_patch.tools.packages import (
    WHEELS,
    Environment,
    Package,
    PackageError,
    Resolution,
    last_line,
    requirement_name,
)
from mongrate.config import database_from_url, redact, with_database
from mongrate.text import counts

MIN_PYTHON = (3, 11)
MIN_PILLOW = (10, 0)
MAIN_CANDIDATES = ("app/main.py", "main.py")
DEFAULT_RESTART = "systemctl restart flowise-proxy"
DEFAULT_STOP = "systemctl stop flowise-proxy"
BACKUPS = "backups"
BACKUP_PREFIX = "pre_image_rendering_"
MANIFEST = "manifest.json"
EXIT_FAILED, EXIT_INVALID = 1, 2


class DeployError(Exception):
    """A step failed; ``str(exc)`` is the one line shown, ``exit_code`` the process status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def say(message: str) -> None:
    print(f"deploy: {message}", flush=True)


# ---------------------------------------------------------------------------- environment
def service_env(app_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The service's variables: ``DIR/.env`` overlaid by the process environment (which wins,
    as it does for pydantic-settings)."""
    values: dict[str, str] = {}
    dotenv = app_dir / ".env"
    if dotenv.is_file():
        for raw in dotenv.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.removeprefix("export ").partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    values.update(os.environ if environ is None else environ)
    return values


@dataclass
class Target:
    """Where the service lives and what it connects to."""

    app_dir: Path
    main: Path
    code_paths: list[str]  # relative paths backed up: the app package and requirements.txt
    requirements: Path
    mongrate_config: Path
    url: str  # the service's MongoDB URL with the effective database in its path
    database: str
    restart_cmd: str | None  # None (and stop_cmd None) with --skip-restart
    stop_cmd: str | None
    python: str = sys.executable  # the service's interpreter

    def mongrate(self, *args: str, as_json: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the mongrate CLI of this Python on the service's config and database (a URL
        with a password goes by ``$MONGRATE_URL``, not ``--url``: argv is visible to all)."""
        cmd = [sys.executable, "-m", "mongrate", "-c", str(self.mongrate_config)]
        env = dict(os.environ)
        if urlsplit(self.url).password is None:
            cmd += ["--url", self.url]
        else:
            env["MONGRATE_URL"] = self.url
        cmd += ["--json", *args] if as_json else list(args)
        return subprocess.run(cmd, cwd=self.app_dir, env=env, capture_output=True, text=True)

    def state(self) -> dict[str, Any]:
        """``mongrate current --json``: heads, pending and unknown revisions."""
        proc = self.mongrate("current", as_json=True)
        if proc.returncode != 0:
            raise DeployError(f"mongrate current failed: {last_line(proc)}")
        return json.loads(proc.stdout)

    def heads(self) -> list[str]:
        return sorted(self.state()["heads"])


def heads_text(heads: list[str]) -> str:
    return ", ".join(heads) or "base"


def resolve_target(args: argparse.Namespace) -> Target:
    """Check the arguments and locate the main module, requirements and mongrate config."""
    app_dir = Path(args.app_dir).resolve()
    if not app_dir.is_dir():
        raise DeployError(f"--app-dir {args.app_dir}: no such directory", EXIT_INVALID)
    if args.main:
        main = (app_dir / args.main).resolve()
        if not main.is_file():
            raise DeployError(f"--main {args.main}: no such file under {app_dir}", EXIT_INVALID)
    else:
        found = [app_dir / c for c in MAIN_CANDIDATES if (app_dir / c).is_file()]
        if not found:
            raise DeployError(
                f"no main module in {app_dir} (looked for {', '.join(MAIN_CANDIDATES)}): "
                "pass --main PATH/TO/main.py",
                EXIT_INVALID,
            )
        main = found[0]
    try:
        relative = main.relative_to(app_dir)
    except ValueError:
        raise DeployError(f"--main {args.main} is outside {app_dir}", EXIT_INVALID) from None
    if relative.parts[0] == BACKUPS:
        raise DeployError(f"--main {relative} is inside the backups folder", EXIT_INVALID)
    config = Path(args.mongrate_config or app_dir / "mongrate.ini").resolve()
    if not config.is_file():
        raise DeployError(
            f"mongrate config {config} not found: copy the project's mongrate.ini into the app "
            "directory or pass --mongrate-config FILE",
            EXIT_INVALID,
        )
    python = args.python or sys.executable
    if not (shutil.which(python) or Path(python).is_file()):
        raise DeployError(f"--python {python}: no such interpreter", EXIT_INVALID)
    env = service_env(app_dir)
    base_url = env.get("MONGODB_URL", "").strip() or DEFAULT_URL
    database = database_from_url(base_url) or env.get("MONGODB_DATABASE_NAME", "").strip()
    database = database or DEFAULT_DATABASE
    return Target(
        app_dir=app_dir,
        main=main,
        code_paths=[relative.parts[0], "requirements.txt"],
        requirements=app_dir / "requirements.txt",
        mongrate_config=config,
        url=with_database(base_url, database),
        database=database,
        restart_cmd=None if args.skip_restart else args.restart_cmd,
        stop_cmd=None if args.skip_restart else args.stop_cmd,
        python=python,
    )


# ----------------------------------------------------------------------------- code edits
ROUTER_IMPORT = "from app_patch.service.router import router as image_rendering_router"
ROUTER_INCLUDE = "app.include_router(image_rendering_router)"
MARK_BEGIN = "# >>> image rendering (added by app_patch.tools.deploy; --rollback removes it)"
MARK_END = "# <<< image rendering"
REQUIREMENTS_MARK = "# image rendering (added by app_patch.tools.deploy)"
_INCLUDED = re.compile(r"^\s*app\.include_router\(\s*image_rendering_router\b", re.M)


class PatchRefused(Exception):
    """The main module cannot be patched automatically; the message says why."""


@dataclass(frozen=True)
class RouterPatch:
    """Where the router block goes: after the statement creating the app."""

    app_line: int  # first line of ``app = FastAPI(``
    insert_after: int  # last line of that statement
    block: str


def _creates_fastapi_app(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    if not any(isinstance(t, ast.Name) and t.id == "app" for t in targets):
        return False
    func = value.func if isinstance(value, ast.Call) else None
    return (isinstance(func, ast.Name) and func.id == "FastAPI") or (
        isinstance(func, ast.Attribute) and func.attr == "FastAPI"
    )


def _source(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PatchRefused(f"{path} is not UTF-8 text; add the router by hand") from None


def plan_router_patch(main: Path) -> RouterPatch | None:
    """Where the router goes in ``main``; None when it is already included."""
    source = _source(main)
    if MARK_BEGIN in source or _INCLUDED.search(source):
        return None
    try:
        tree = ast.parse(source, filename=str(main))
    except SyntaxError as exc:
        raise PatchRefused(
            f"{main} does not parse (line {exc.lineno}: {exc.msg}); fix it before deploying"
        ) from None
    apps = [n for n in tree.body if _creates_fastapi_app(n)]
    if not apps:
        raise PatchRefused(
            f"{main} has no module-level 'app = FastAPI(' line, so the router cannot be added "
            f"automatically: add '{ROUTER_IMPORT}' and '{ROUTER_INCLUDE}' by hand, or pass "
            "--main with the module that creates the app"
        )
    node = apps[-1]  # the app the module ends up serving
    block = "\n".join(
        [
            MARK_BEGIN,
            "# Included first so these routes take precedence over older ones on the same paths.",
            f"{ROUTER_IMPORT}  # noqa: E402",
            ROUTER_INCLUDE,
            MARK_END,
        ]
    )
    return RouterPatch(node.lineno, node.end_lineno or node.lineno, block)


def apply_router_patch(main: Path, patch: RouterPatch) -> None:
    """Insert ``patch.block`` into ``main``, keeping its line endings; check it compiles."""
    source = _source(main)
    lines = source.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    head, tail = lines[: patch.insert_after], lines[patch.insert_after :]
    if head and not head[-1].endswith(("\n", "\r")):
        head[-1] += newline
    block = newline + newline.join(patch.block.splitlines()) + newline
    if tail and tail[0].strip():
        block += newline
    patched = "".join(head) + block + "".join(tail)
    try:
        compile(patched, str(main), "exec")
    except SyntaxError as exc:
        raise DeployError(f"patching {main} would break its syntax ({exc.msg})") from None
    main.write_bytes(patched.encode("utf-8"))


def mongrate_line(text: str) -> str | None:
    """The line of a requirements ``text`` that installs mongrate, if any."""
    return next((ln for ln in text.splitlines() if requirement_name(ln) == "mongrate"), None)


def add_requirements(path: Path, lines: list[str]) -> None:
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith(("\n", "\r")):
        text += newline
    text += newline.join([REQUIREMENTS_MARK, *lines]) + newline
    path.write_bytes(text.encode("utf-8"))


class FileGuard:
    """Bytes and times of files before a deploy edits them, to put them back exactly."""

    def __init__(self, paths: list[Path]) -> None:
        self._saved: dict[Path, tuple[bytes, int, int] | None] = {}
        for path in paths:
            if path.is_file():
                st = path.stat()
                self._saved[path] = (path.read_bytes(), st.st_atime_ns, st.st_mtime_ns)
            else:
                self._saved[path] = None

    def restore(self) -> list[str]:
        """Put back every file that changed; return their names."""
        restored = []
        for path, saved in self._saved.items():
            if saved is None:
                if path.is_file():
                    path.unlink()
                    restored.append(path.name)
                continue
            data, atime, mtime = saved
            if path.is_file() and path.stat().st_mtime_ns == mtime and path.read_bytes() == data:
                continue
            path.write_bytes(data)
            os.utime(path, ns=(atime, mtime))
            restored.append(path.name)
        return restored


def restore_paths(app_dir: Path, folder: Path, paths: list[str], present: set[str]) -> None:
    """Copy every backed-up file over its current version, each by an atomic rename, and
    delete the paths that did not exist back then. Files added since are left alone, as the
    guide's ``cp -r backups/pre_image_rendering_*/app/ ./`` leaves them."""
    missing = [rel for rel in paths if rel in present and not (folder / rel).exists()]
    if missing:
        raise DeployError(f"{folder} lacks {', '.join(missing)}: the backup is incomplete")
    for rel in paths:
        src, dest = folder / rel, app_dir / rel
        if rel not in present:
            if dest.is_file():
                dest.unlink()
            continue
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for file in files:
            out = dest / file.relative_to(src) if src.is_dir() else dest
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = out.with_name(f".{out.name}.rollback")
            shutil.copy2(file, staging)
            os.replace(staging, out)


# ----------------------------------------------------------------------------- validation
@dataclass
class Plan:
    """What a deploy will change, computed by :func:`validate` without changing anything."""

    target: Target
    heads_before: list[str]
    pending: list[str]
    package: Package | None  # the mongrate[app] line to add; None: named already, or no install
    router: RouterPatch | None  # None: already installed
    resolution: Resolution | None = None  # None with --skip-install
    stopped: bool = False  # the service was stopped by this run

    @property
    def add_requirements(self) -> list[str]:
        return [self.package.line] if self.package else []

    @property
    def changes_code(self) -> bool:
        return bool(self.add_requirements) or self.router is not None

    @property
    def wheel_path(self) -> Path | None:
        """Where the install step puts the package's wheel in the service folder."""
        wheel = self.package.wheel if self.package else None
        return self.target.app_dir / WHEELS / wheel.name if wheel else None


def check_runtime(env: Environment, *, pillow_required: bool) -> str:
    """The service's Python new enough; its Pillow new enough (or about to be installed)."""
    version = ".".join(map(str, env.version))
    if env.version[:2] < MIN_PYTHON:
        raise DeployError(
            f"the service's Python {version} ({env.python}) is too old: the patch needs "
            f"{'.'.join(map(str, MIN_PYTHON))}+",
            EXIT_INVALID,
        )
    pillow = env.installed.get("pillow")
    if pillow is None:
        if pillow_required:
            raise DeployError(
                f"Pillow is not installed for {env.python}: install 'Pillow>=10.0.1' there or "
                "drop --skip-install",
                EXIT_INVALID,
            )
        return f"Python {version} ({env.python}); Pillow not installed yet (the install adds it)"
    if tuple(int(p) for p in re.findall(r"\d+", pillow)[:2]) < MIN_PILLOW:
        raise DeployError(
            f"Pillow {pillow} is too old for the patch: it needs 'Pillow>=10.0.1'", EXIT_INVALID
        )
    return f"Python {version} ({env.python}), Pillow {pillow}"


def check_database(target: Target) -> str:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        with MongoClient(target.url, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")
    except (PyMongoError, ValueError) as exc:
        reason = re.split(r" \(configured timeouts|, Timeout: ", str(exc).splitlines()[0])[0][:200]
        raise DeployError(
            f"database {target.database} not reachable at {redact(target.url)} ({reason}): "
            "check MONGODB_URL (environment or .env) and that MongoDB is running",
            EXIT_INVALID,
        ) from None
    return f"{target.database} reachable at {redact(target.url)}"


def check_imports(target: Target) -> str:
    """Import the router and its dependencies with the service's interpreter (as the service
    will), from its folder; say which async driver it uses."""
    code = (
        "import PIL, fastapi, jwt, pymongo\n"
        "try:\n import python_multipart\nexcept ImportError:\n import multipart\n"
        "import app_patch.service.router\n"
        "from app_patch.service.driver import DRIVER\n"
        "print(DRIVER.name)\n"
    )
    proc = subprocess.run(
        [target.python, "-c", code], cwd=target.app_dir, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise DeployError(f"the router cannot be imported: {last_line(proc)}")
    driver = (proc.stdout.strip().splitlines() or ["?"])[-1]
    return f"app_patch.service.router and its dependencies import (async driver: {driver})"


def check_main(target: Target) -> str:
    """Import the patched main module with the service's interpreter, as the server will
    (module-level code such as middleware set-up runs; the lifespan does not)."""
    module = ".".join(target.main.relative_to(target.app_dir).with_suffix("").parts)
    code = f"import importlib, sys\nsys.path.insert(0, '.')\nimportlib.import_module({module!r}).app\n"
    try:
        proc = subprocess.run(
            [target.python, "-c", code],
            cwd=target.app_dir, env=service_env(target.app_dir), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise DeployError(f"importing {module} took over 300 s") from None
    if proc.returncode != 0:
        raise DeployError(f"the patched {module} does not import: {last_line(proc)}")
    return f"{module} imports with the router included"


def plan_package(
    target: Target, env: Environment, args: argparse.Namespace, workdir: Path
) -> tuple[Package | None, Resolution | None]:
    """The mongrate[app] line to add (None if named already) and how the requirements
    resolve with it in the service's environment. Nothing changes."""
    current = target.requirements.read_text("utf-8") if target.requirements.exists() else ""
    named = mongrate_line(current)
    try:
        package = None if named else packages.prepare(args.wheel, args.requirement, workdir)
        if named:
            say(f"requirements: mongrate named already ({named.strip()}); not changed")
        else:
            say(f"requirements: will add {package.line}")
        resolution = packages.resolve(
            env,
            target.app_dir,
            target.requirements,
            package.resolvable if package else None,
            workdir,
        )
    except PackageError as exc:
        raise DeployError(str(exc), EXIT_INVALID) from None
    pip = f"{target.python} -m pip"
    say(f"resolution: {pip} resolves requirements.txt" + (" + that line" if package else ""))
    for line in resolution.lines():
        print(f"    {line}")
    multipart = resolution.stack.get("python-multipart")
    if multipart and _version(multipart) < MULTIPART_FIXED:
        say(
            f"security: python-multipart {multipart} has a ReDoS in Content-Type parsing "
            "(CVE-2024-24762, fixed in 0.0.7): the patched upload route refuses such headers "
            "itself; the service's own multipart routes stay exposed"
        )
        fix = smallest_multipart_fix(target, env, package, workdir)
        if fix is None:
            say("security: no python-multipart 0.0.7-0.0.9 resolves with the other pins")
        elif args.fix_multipart:
            say(f"security: will pin python-multipart=={fix[0]} (--fix-multipart); it resolves:")
            for line in fix[1].lines():
                print(f"    {line}")
            args.multipart_pin = fix[0]
            resolution = fix[1]
        else:
            say(
                f"security: the smallest fix pip resolves with the other pins is "
                f"python-multipart=={fix[0]}; --fix-multipart pins it (not applied)"
            )
    return package, resolution


#: The first python-multipart without the Content-Type ReDoS.
MULTIPART_FIXED = (0, 0, 7)
_MULTIPART_CANDIDATES = ("0.0.7", "0.0.8", "0.0.9")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def pin_multipart(text: str, version: str) -> str:
    """``text`` (requirements) with its python-multipart line pinned to ``version`` (added
    when there is none); other lines byte for byte."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    pinned = f"python-multipart=={version}"
    out = [pinned if requirement_name(ln) == "python-multipart" else ln for ln in lines]
    if pinned not in out:
        out.append(pinned)
    return newline.join(out) + newline


def smallest_multipart_fix(
    target: Target, env: Environment, package: Package | None, workdir: Path
) -> tuple[str, Resolution] | None:
    """The lowest python-multipart from 0.0.7 that pip resolves with every other pin of
    the service (one dry run each, in order), and that resolution."""
    current = target.requirements.read_text("utf-8") if target.requirements.exists() else ""
    for version in _MULTIPART_CANDIDATES:
        trial = workdir / f"requirements-multipart-{version}.txt"
        trial.write_text(pin_multipart(current, version), encoding="utf-8")
        try:
            resolution = packages.resolve(
                env, target.app_dir, trial, package.resolvable if package else None, workdir
            )
        except PackageError:
            continue
        return version, resolution
    return None


def validate(target: Target, args: argparse.Namespace, workdir: Path) -> Plan:
    """Every check that needs no change, printing one line each; raises on the first failure.
    ``workdir`` (deleted after the run) receives a built wheel and pip's report."""
    skip_install = args.skip_install
    try:
        env = packages.describe(target.python, target.app_dir)
    except PackageError as exc:
        raise DeployError(str(exc), EXIT_INVALID) from None
    say(f"runtime: {check_runtime(env, pillow_required=skip_install)}")
    say(f"database: {check_database(target)}")
    try:
        state = target.state()
    except DeployError as exc:
        raise DeployError(
            f"mongrate config {target.mongrate_config} is not usable: {exc}", EXIT_INVALID
        ) from None
    if state.get("unknown"):
        raise DeployError(
            f"the database is at revision(s) {', '.join(state['unknown'])} that no file in the "
            f"mongrate config's script_location defines: point {target.mongrate_config} at the "
            "right versions folder",
            EXIT_INVALID,
        )
    heads, pending = sorted(state["heads"]), list(state.get("pending") or [])
    say(
        f"mongrate: {target.mongrate_config} loads; database at {heads_text(heads)}, "
        f"{len(pending)} revision(s) pending" + (f": {', '.join(pending)}" if pending else "")
    )
    try:
        router = plan_router_patch(target.main)
    except PatchRefused as exc:
        raise DeployError(str(exc), EXIT_INVALID) from None
    rel_main = target.main.relative_to(target.app_dir)
    if router is None:
        say(f"router: already included in {rel_main}")
    else:
        say(f"router: {rel_main} line {router.app_line} creates the app; will include it after")
    if skip_install:
        say("requirements: not changed, nothing installed (--skip-install)")
        say(f"imports: {check_imports(target)}")
        return Plan(target, heads, pending, None, router)
    package, resolution = plan_package(target, env, args, workdir)
    return Plan(target, heads, pending, package, router, resolution)


# -------------------------------------------------------------------------------- backups
def make_backup(plan: Plan) -> Path:
    """Copy the code paths into a new timestamped folder with a manifest; return the folder."""
    target = plan.target
    root = target.app_dir / BACKUPS
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    folder = root / f"{BACKUP_PREFIX}{stamp}"
    n = 1
    while folder.exists():  # two deploys in one second: keep both
        n += 1
        folder = root / f"{BACKUP_PREFIX}{stamp}_{n}"
    staging = root / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    present = []
    for rel in target.code_paths:
        src = target.app_dir / rel
        if src.is_dir():
            shutil.copytree(src, staging / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, staging / rel)
        else:
            continue
        present.append(rel)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "tool": "app_patch.tools.deploy",
        "paths": target.code_paths,
        "present": present,  # paths absent here are deleted again by a rollback
        "main": str(target.main.relative_to(target.app_dir)),
        "database": target.database,
        "heads": plan.heads_before,
        "mongrate_config": str(target.mongrate_config),
        "python": sys.version.split()[0],
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    staging.rename(folder)  # a backup either exists whole or not at all
    return folder


def latest_backup(app_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest backup not rolled back yet (so repeated rollbacks undo deploys in turn)."""
    root = app_dir / BACKUPS
    found = []
    for folder in root.glob(f"{BACKUP_PREFIX}*") if root.is_dir() else []:
        try:
            manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError):
            continue  # not a backup this tool made whole
        if isinstance(manifest.get("heads"), list) and not manifest.get("rolled_back_at"):
            found.append((str(manifest.get("created_at", "")), folder.name, folder, manifest))
    if not found:
        raise DeployError(
            f"no backup to roll back to in {root} (each deploy that changes something makes "
            "one; backups already rolled back are not reused)"
        )
    _, _, folder, manifest = max(found)
    return folder, manifest


# --------------------------------------------------------------------------------- deploy
def run_service_cmd(what: str, cmd: str) -> None:
    """Run the ``what`` (stop/restart) command; raise with its last output line."""
    say(f"{what}: {cmd}")
    try:
        proc = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=300)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"{what} command {cmd!r} failed: {exc}") from None
    if proc.returncode != 0:
        raise DeployError(f"{what} command {cmd!r} failed: {last_line(proc)}")


def stop_service(target: Target, *, dry_run: bool) -> bool:
    """Stop the service before revisions run (rewrites drop writes made meanwhile)."""
    if not target.stop_cmd:
        say("service: not stopped (--skip-restart); keep it stopped while revisions run")
        return False
    if dry_run:
        say(f"would run: {target.stop_cmd}")
        return False
    run_service_cmd("stop", target.stop_cmd)
    return True


def restart_after_failure(target: Target) -> str:
    """Best effort: bring the service back with the code put back; say how it went."""
    try:
        run_service_cmd("restart", target.restart_cmd or "")
    except DeployError as exc:
        return f"service NOT restarted ({exc})"
    return "service restarted"


def migrate(target: Target, *args: str, dry_run: bool = False) -> list[str]:
    """Run ``mongrate upgrade|downgrade ...``, echo what it did (or would do), return the
    heads after it (``[]`` in a dry run)."""
    proc = target.mongrate(*args, "--dry-run") if dry_run else target.mongrate(*args, as_json=True)
    if proc.returncode != 0:
        shown = " ".join([*args, *(["--dry-run"] if dry_run else [])])
        raise DeployError(f"mongrate {shown} failed: {last_line(proc)}")
    if dry_run:
        print("\n".join(f"    {line}" for line in proc.stdout.splitlines()))
        return []
    run = json.loads(proc.stdout)
    for step in run["steps"]:
        print(f"    {run['direction']}d {step['revision']} in {step['duration']:.2f}s")
        for line in counts(step.get("results") or {}, indent="        "):
            print(line)
    heads = sorted(run["heads_after"])
    print(f"    database at {heads_text(heads)}")
    return heads


def move_database(target: Target, heads: list[str], now: list[str], dry_run: bool = False) -> bool:
    """Downgrade from ``now`` to ``heads`` (``base`` when empty); False if already there."""
    if now == heads:
        return False
    for rev in heads or ["base"]:
        now = migrate(target, "downgrade", rev, dry_run=dry_run)
    if not dry_run and now != heads:
        raise DeployError(f"downgraded to {heads_text(now)}, not {heads_text(heads)}")
    return True


def deploy(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    with tempfile.TemporaryDirectory(prefix="mongrate-deploy-") as workdir:
        return deploy_planned(args, validate(target, args, Path(workdir)))


def deploy_planned(args: argparse.Namespace, plan: Plan) -> int:
    target = plan.target
    backup = None
    if args.skip_backup or not (plan.changes_code or plan.pending):
        say(f"backup: {'skipped (--skip-backup)' if args.skip_backup else 'none needed'}")
    elif args.dry_run:
        say(f"would back up {', '.join(target.code_paths)} to {BACKUPS}/{BACKUP_PREFIX}<time>/")
    else:
        backup = make_backup(plan)
        say(f"backup: {backup.relative_to(target.app_dir)} (heads {heads_text(plan.heads_before)})")
    guard = FileGuard([p for p in (target.requirements, target.main, plan.wheel_path) if p])
    try:
        heads = apply(plan, args)
    except (Exception, KeyboardInterrupt) as exc:
        if args.dry_run:
            raise
        reason = str(exc) if isinstance(exc, DeployError) else f"{type(exc).__name__}: {exc}"
        raise DeployError(recover(plan, guard, backup, reason)) from None
    if args.dry_run:
        say("dry run: nothing was changed")
    else:
        say(f"done: image rendering deployed; database {target.database} at {heads_text(heads)}")
    return 0


def apply(plan: Plan, args: argparse.Namespace) -> list[str]:
    """The changing steps (or, in a dry run, what they would do); returns the final heads."""
    target, dry = plan.target, args.dry_run
    rel_main = target.main.relative_to(target.app_dir)
    wheel = plan.wheel_path
    if wheel is not None and plan.package and plan.package.wheel:
        if not dry:
            wheel.parent.mkdir(exist_ok=True)
            shutil.copy2(plan.package.wheel, wheel)
        say(f"{'would copy' if dry else 'copied'} {wheel.name} to {WHEELS}/")
    if plan.add_requirements:
        if not dry:
            add_requirements(target.requirements, plan.add_requirements)
        added = ", ".join(plan.add_requirements)
        say(f"{'would add' if dry else 'added'} to requirements.txt: {added}")
    pin = getattr(args, "multipart_pin", None)
    if pin and not args.skip_install:
        if not dry:
            text = target.requirements.read_bytes().decode("utf-8")
            target.requirements.write_bytes(pin_multipart(text, pin).encode("utf-8"))
        say(f"{'would pin' if dry else 'pinned'} python-multipart=={pin} in requirements.txt")
    if not args.skip_install:
        pip = [target.python, "-m", "pip", "install", "--quiet", "-r", str(target.requirements)]
        say(f"{'would run' if dry else 'install'}: {shlex.join(pip)} (in {target.app_dir})")
        if not dry:
            proc = subprocess.run(pip, cwd=target.app_dir, capture_output=True, text=True)
            if proc.returncode != 0:
                raise DeployError(f"pip install failed: {last_line(proc)}")
            say(f"imports: {check_imports(target)}")
    if plan.router is not None:
        if dry:
            say(f"would insert into {rel_main} after line {plan.router.insert_after}:")
            print("\n".join(f"    {line}" for line in plan.router.block.splitlines()))
        else:
            apply_router_patch(target.main, plan.router)
            say(f"router: included in {rel_main}")
    if not args.skip_install:
        say(f"would import {rel_main} with the router" if dry else f"service: {check_main(target)}")
    if plan.pending:
        plan.stopped = stop_service(target, dry_run=dry)
    say("would run: mongrate upgrade head (its dry run:)" if dry else "database: upgrade head")
    after = migrate(target, "upgrade", "head", dry_run=dry)
    heads = plan.heads_before if dry else after
    if not target.restart_cmd:
        say("restart: skipped")
    elif dry:
        say(f"would run: {target.restart_cmd}")
    else:
        run_service_cmd("restart", target.restart_cmd)
    pregenerate_thumbnails(target, dry_run=dry)
    return heads


def pregenerate_thumbnails(target: Target, *, dry_run: bool) -> None:
    """Thumbnails of the images already stored, once the database is at head and the service
    is back (it serves meanwhile). Resumable, and a cache: a failure only warns."""
    cmd = [sys.executable, "-m", "app_patch.tools.pregen_thumbnails"]
    env = dict(os.environ)
    if urlsplit(target.url).password is None:
        cmd += ["--url", target.url]
    else:
        env["MONGODB_URL"] = target.url  # argv is visible to all
    if dry_run:
        say(f"would run: {shlex.join(cmd)}")
        return
    proc = subprocess.run(cmd, cwd=target.app_dir, env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        say(f"thumbnails: {last_line(proc).removeprefix('pregen: ')}")
    else:
        say(f"thumbnails: not pre-generated ({last_line(proc)}); run {shlex.join(cmd)} later")


def recover(plan: Plan, guard: FileGuard, backup: Path | None, reason: str) -> str:
    """Put code and database back after a failed step; return the one-line report."""
    target, notes, complete = plan.target, [], True
    try:
        restored = guard.restore()
        notes.append(f"code put back as it was ({', '.join(restored)})" if restored else "")
    except OSError as exc:
        complete = False
        notes.append(f"code NOT put back ({exc}); run --rollback")
    try:
        if move_database(target, plan.heads_before, target.heads()):
            notes.append(f"database put back to {heads_text(plan.heads_before)}")
    except DeployError as exc:
        complete = False
        notes.append(f"database NOT put back ({exc}); fix that, then run --rollback")
    if backup is not None and complete:
        shutil.rmtree(backup, ignore_errors=True)
        with contextlib.suppress(OSError):
            backup.parent.rmdir()  # only if this run's backup was the only one
    elif backup is not None:
        notes.append(f"backup kept in {backup.relative_to(target.app_dir)}")
    if plan.stopped:
        notes.append(restart_after_failure(target))
    return "; ".join([reason, *filter(None, notes)])


# ------------------------------------------------------------------------------- rollback
def rollback(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    say(f"database: {check_database(target)}")
    folder, manifest = latest_backup(target.app_dir)
    if manifest.get("database", target.database) != target.database:
        raise DeployError(
            f"{folder.name} was made for database {manifest['database']} but the service now "
            f"uses {target.database}: fix MONGODB_URL / MONGODB_DATABASE_NAME first",
            EXIT_INVALID,
        )
    heads = sorted(str(h) for h in manifest["heads"])
    paths = [str(p) for p in manifest.get("paths", [])]
    for rel in paths:
        if Path(rel).is_absolute() or ".." in Path(rel).parts or Path(rel).parts[0] == BACKUPS:
            raise DeployError(f"{folder / MANIFEST}: refusing path {rel!r}", EXIT_INVALID)
    now = target.heads()
    say(
        f"rollback: to {folder.relative_to(target.app_dir)} (made {manifest.get('created_at')}): "
        f"code {', '.join(paths)}; database {heads_text(now)} -> {heads_text(heads)}"
    )
    # Database first: if it cannot go back, the code still matches it and nothing changed.
    stopped = now != heads and stop_service(target, dry_run=args.dry_run)
    try:
        move_database(target, heads, now, dry_run=args.dry_run)
    except DeployError as exc:
        note = f"; {restart_after_failure(target)}" if stopped else ""
        raise DeployError(f"{exc}{note}") from None
    if args.dry_run:
        say(f"would restore {', '.join(paths)}, then run: {target.restart_cmd or 'no restart'}")
        say("dry run: nothing was changed")
        return 0
    say(f"database: at {heads_text(heads)}")
    restore_paths(target.app_dir, folder, paths, set(manifest.get("present", paths)))
    manifest["rolled_back_at"] = datetime.now(UTC).isoformat()
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(f"code: restored {', '.join(paths)}")
    if target.restart_cmd:
        try:
            run_service_cmd("restart", target.restart_cmd)
        except DeployError as exc:
            raise DeployError(f"{exc} (code and database are already rolled back)") from None
    say("done: rolled back")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app_patch.tools.deploy",
        description="Deploy the image-rendering change into a FastAPI service, or roll it back.",
    )
    p.add_argument("--app-dir", required=True, help="the service's folder (holds app/main.py)")
    p.add_argument("--main", help="main module relative to --app-dir (default app/main.py)")
    p.add_argument("--mongrate-config", help="mongrate.ini (default DIR/mongrate.ini)")
    p.add_argument(
        "--python", help="the service's Python interpreter (default: the one running deploy)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--wheel", help="a built mongrate wheel to install (default: build one from this checkout)"
    )
    source.add_argument(
        "--requirement",
        help="a requirement the service's pip can fetch instead, e.g. 'mongrate[app]==0.1.0' "
        "from a private index",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    p.add_argument(
        "--fix-multipart", action="store_true",
        help="pin the smallest python-multipart (0.0.7+) that resolves, when the service's "
        "pin has the Content-Type ReDoS (CVE-2024-24762)",
    )
    p.add_argument("--skip-backup", action="store_true", help="take no code backup")
    p.add_argument("--skip-install", action="store_true", help="do not run pip install")
    p.add_argument("--skip-restart", action="store_true", help="do not stop/restart the service")
    p.add_argument("--restart-cmd", default=DEFAULT_RESTART, help=f"default: {DEFAULT_RESTART}")
    p.add_argument(
        "--stop-cmd", default=DEFAULT_STOP, help=f"run before revisions; default: {DEFAULT_STOP}"
    )
    p.add_argument("--rollback", action="store_true", help="undo the latest deploy")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return rollback(args) if args.rollback else deploy(args)
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("deploy: interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
