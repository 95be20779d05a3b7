"""Deploy into a service on the original's pinned stack, every package from the index.

``fixtures_target_app`` has the original service's layout and its requirements pin for pin
(FastAPI 0.104.1, pymongo 4.6.1, Motor 3.3.2, Pillow 10.0.1, python-multipart 0.0.6, httpx
0.25.2, ...); its ``app/main.py`` connects Motor in its lifespan and reads
``app.user_middleware[-1].options`` as the original does. The test installs those pins into a
fresh venv, deploys with that venv as the service's Python (the dry run first: it must report
the resolved set and change nothing), starts the service with uvicorn on 127.0.0.1 and runs
``app_patch.tools.verify`` against it. Wheels are cached in the test's temp dir only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pymongo.database import Database

from app_patch.testdata.seed import seed
from tests.app.conftest import PINS, service_environ
from tests.app.test_operator_tools import (
    EXPECTED_CHECKS,
    FIXTURE_APP,
    ROOT,
    SECRET,
    run_verify,
    uvicorn,
    verdicts,
)

pytestmark = pytest.mark.slow

STACK = {
    "fastapi": "0.104.1", "starlette": "0.27.0", "pymongo": "4.6.1", "motor": "3.3.2",
    "pillow": "10.0.1", "python-multipart": "0.0.6", "pyjwt": "2.8.0",
}  # fmt: skip


def installed(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    out = subprocess.run(  # from the venv's folder: this checkout's egg-info stays unseen
        [python, "-c", code], cwd=Path(python).parent, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_deploy_into_the_pinned_service_installs_starts_and_verifies(
    pinned_python: str, mongo_url: str, mongo_db: Database, tmp_path: Path
) -> None:
    before = installed(pinned_python)
    assert {k: before.get(k) for k in STACK} == STACK  # the pins really are what runs
    svc = tmp_path / "flowise-proxy-service-py"
    shutil.copytree(FIXTURE_APP, svc, ignore=shutil.ignore_patterns("__pycache__"))
    (svc / "mongrate.ini").write_text(
        f"[mongrate]\nscript_location = {ROOT / 'versions'}\nprepend_sys_path = {ROOT}\n",
        encoding="utf-8",
    )
    seed(mongo_db, sessions=2, messages_per_session=3, uploads=4, seed=7)
    session = mongo_db.chat_sessions.find_one({}, {"session_id": 1, "user_id": 1})
    env = service_environ(
        MONGODB_URL=mongo_url, JWT_ACCESS_SECRET=SECRET, PIP_CACHE_DIR=str(tmp_path / "pip")
    )
    pins_text = PINS.read_text()

    def deploy(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "app_patch.tools.deploy", "--app-dir", str(svc)]
        cmd += ["--python", pinned_python, "--skip-restart", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)

    # The dry run reports the plan and the resolution in the service's venv; changes nothing.
    names = set(mongo_db.list_collection_names())
    proc = deploy("--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    wheel_line = next(ln for ln in out.splitlines() if "requirements: will add" in ln)
    assert "./wheels/mongrate-" in wheel_line and wheel_line.endswith("-py3-none-any.whl[app]")
    assert "would install: mongrate " in out
    assert "would change: nothing installed" in out  # every pin holds
    stack = next(ln for ln in out.splitlines() if "resolved stack:" in ln)
    for name, version in STACK.items():
        assert f"{name} {version}" in stack, (name, stack)
    assert stack.endswith("async driver: motor")
    assert "would insert into app/main.py after line" in out and "dry run: nothing was changed" in out
    # The service's own python-multipart pin has the Content-Type ReDoS: named, and the
    # smallest pin pip resolves with the others offered, not applied.
    assert "security: python-multipart 0.0.6 has a ReDoS in Content-Type parsing" in out
    assert ("the smallest fix pip resolves with the other pins is python-multipart==0.0.7; "
            "--fix-multipart pins it (not applied)") in out
    fixing = deploy("--dry-run", "--fix-multipart")
    assert fixing.returncode == 0, fixing.stdout + fixing.stderr
    assert "will pin python-multipart==0.0.7 (--fix-multipart)" in fixing.stdout
    assert "would change: python-multipart 0.0.6 -> 0.0.7" in fixing.stdout
    assert "would pin python-multipart==0.0.7 in requirements.txt" in fixing.stdout
    assert (svc / "requirements.txt").read_text() == pins_text
    assert not (svc / "wheels").exists() and not (svc / "backups").exists()
    assert set(mongo_db.list_collection_names()) == names
    assert installed(pinned_python) == before

    proc = deploy()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "(async driver: motor)" in out
    assert "service: app.main imports with the router included" in out
    assert "done: image rendering deployed" in out
    after = installed(pinned_python)
    assert {k: after.get(k) for k in STACK} == STACK  # nothing moved
    assert set(after) - set(before) == {"mongrate"}
    wheel = wheel_line.split("will add ./", 1)[1].removesuffix("[app]")
    assert (svc / wheel).is_file()
    assert (svc / "requirements.txt").read_text().startswith(pins_text)

    # The engine itself runs on the pinned pymongo too: it reads the state deploy left.
    state = subprocess.run(
        [pinned_python, "-m", "mongrate", "-c", str(svc / "mongrate.ini"), "--url", mongo_url,
         "--json", "current"],
        cwd=svc, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["pending"] == []

    run_env = service_environ(MONGODB_URL=mongo_url, JWT_ACCESS_SECRET=SECRET)
    log = tmp_path / "service.log"
    with uvicorn("app.main:app", svc, run_env, log, python=pinned_python) as base:
        assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
        code, lines = run_verify(
            base, "--jwt-secret", SECRET, "--user", session["user_id"],
            "--session-id", session["session_id"],
        )  # fmt: skip
    assert code == 0, "\n".join(lines) + log.read_text()[-3000:]
    assert verdicts(lines) == {name: "PASS" for name in [*EXPECTED_CHECKS, "cleanup"]}

    # A pin the patch cannot live with is refused by the dry run, naming both sides.
    requirements = svc / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("pillow==10.0.1", "pillow==9.5.0"))
    proc = deploy("--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith("deploy: error: the requirements do not resolve: conflict: ")
    assert "pillow==9.5.0" in error and "pillow>=10.0.1" in error.lower()
    assert installed(pinned_python) == after
