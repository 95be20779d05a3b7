"""The operator tools as an operator runs them: real processes, a real database.

``verify`` runs against ``uvicorn app_patch.service.app:app`` on a free 127.0.0.1 port (and, for the
checks that must fail, in process against a deliberately broken app). ``deploy`` runs on a
temp copy of ``fixtures_target_app`` with the main module and requirements of
``fixtures_target_app_modern`` (a small FastAPI service on this environment's stack, with an
older history route on the same path; ``test_deploy_pinned.py`` deploys into the pinned one) with a ``mongrate.ini`` pointing at the project's ``versions/`` or at a
test-made versions folder whose revisions succeed or fail on purpose. Works whether or not
``versions/`` holds revisions yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pymongo.database import Database

from app_patch.service.app import create_app
from app_patch.service.auth import issue_token
from app_patch.service.settings import Settings
from app_patch.testdata.seed import seed
from app_patch.tools import deploy
from app_patch.tools.verify import THUMB_SIZES, run_checks
from mongrate.config import database_from_url, with_database

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FIXTURE_APP = Path(__file__).with_name("fixtures_target_app")
MODERN_OVERLAY = Path(__file__).with_name("fixtures_target_app_modern")
SECRET = "operator-tools-secret-0123456789abcdef"
USER, OTHER = "user-operator", "user-other"
SESSION, OTHER_SESSION = "sess-operator", "sess-other"
CHAT = ("chat_sessions", "chat_messages", "file_uploads", "fs.files", "fs.chunks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the service's or mongrate's variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONGODB_", "JWT_", "MONGRATE_", "DEMO_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def add_sessions(db: Database) -> None:
    for session_id, user in ((SESSION, USER), (OTHER_SESSION, OTHER)):
        db.chat_sessions.insert_one(
            {"session_id": session_id, "user_id": user, "chatflow_id": "cf-1", "topic": "t",
             "is_active": True}
        )


# ------------------------------------------------------------------------------------ verify
@contextmanager
def uvicorn(
    app: str, cwd: Path, env: dict[str, str], log: Path, python: str = PY
) -> Iterator[str]:
    """``python -m uvicorn APP`` on a free 127.0.0.1 port until it answers; yields its URL."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # A long keep-alive: with uvicorn's 5 s, a pooled connection the server closes just
            # as the client reuses it ends in "Server disconnected" on a loaded machine.
            [python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--timeout-keep-alive", "300"],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer within 30 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(mongo_server_url: str, mongo_client: Any, tmp_path_factory: Any) -> Iterator[Any]:
    """``uvicorn app_patch.service.app:app`` on its own database; yields (base URL, database)."""
    name = f"t_ops_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    add_sessions(db)
    env = clean_env(MONGODB_URL=with_database(mongo_server_url, name), JWT_ACCESS_SECRET=SECRET)
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    try:
        with uvicorn("app_patch.service.app:app", ROOT, env, log) as base:
            yield base, db
    finally:
        mongo_client.drop_database(name)


def run_verify(base: str, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [PY, "-m", "app_patch.tools.verify", "--base-url", base, *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout.splitlines()


EXPECTED_CHECKS = [
    "auth_required", "upload", "history_keys", "history_values", "file_inline", "file_download",
    "file_cache_headers", "file_not_modified", *(f"thumbnail_{s}" for s in THUMB_SIZES),
    "thumbnail_default", "thumbnail_cache_headers", "thumbnail_not_modified",
]


def verdicts(lines: list[str]) -> dict[str, str]:
    """{check name: PASS/FAIL} from verify's output lines."""
    found = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL"):
            found[rest.split(":", 1)[0]] = word
    return found


def uploaded_ids(lines: list[str]) -> tuple[str, str]:
    """(file id, message id) from the upload line."""
    words = next(ln for ln in lines if ln.startswith("PASS upload: file ")).split()
    return words[3], words[6]


def test_verify_passes_on_a_healthy_server_and_cleans_up(server: Any) -> None:
    base, db = server
    code, lines = run_verify(
        base, "--jwt-secret", SECRET, "--user", USER, "--session-id", SESSION
    )
    assert code == 0, lines
    assert verdicts(lines) == {name: "PASS" for name in [*EXPECTED_CHECKS, "cleanup"]}
    assert lines[-1] == f"verify: {len(EXPECTED_CHECKS) + 1} passed, 0 failed"
    file_id, message_id = uploaded_ids(lines)
    assert db.file_uploads.find_one({"file_id": file_id}) is None
    assert db.fs.files.find_one({"_id": ObjectId(file_id)}) is None
    message = db.chat_messages.find_one({"_id": ObjectId(message_id)})
    assert message is not None and message["file_ids"] == [] and message["user_id"] == USER


def test_verify_with_a_given_token_and_image_keeps_the_file(server: Any, tmp_path: Path) -> None:
    from PIL import Image

    base, db = server
    image = tmp_path / "small.gif"
    Image.new("P", (150, 90), 3).save(image, "GIF")  # smaller than 200/300: no upscaling
    token = issue_token(USER, SECRET)
    code, lines = run_verify(
        base, "--token", token, "--session-id", SESSION, "--image", str(image), "--keep"
    )
    assert code == 0, lines
    assert verdicts(lines) == {name: "PASS" for name in EXPECTED_CHECKS}
    assert "longest side 150px" in next(ln for ln in lines if "thumbnail_300" in ln)
    row = db.file_uploads.find_one({"file_id": uploaded_ids(lines)[0]})
    assert row is not None and row["is_image"] is True and row["mime_type"] == "image/gif"


@pytest.mark.parametrize(
    "auth",
    [["--token", "not-a-jwt"], ["--jwt-secret", "another-secret-0123456789abcdef", "--user", USER]],
    ids=["garbage-token", "wrong-secret"],
)
def test_verify_fails_when_the_token_is_refused(server: Any, auth: list[str]) -> None:
    base, db = server
    before = db.fs.files.count_documents({})
    code, lines = run_verify(base, *auth, "--session-id", SESSION)
    assert code == 1
    assert "FAIL upload: POST /api/v1/chat/files answered 401, expected 201" in lines[1]
    assert lines[-1] == "verify: 1 passed, 1 failed"
    assert db.fs.files.count_documents({}) == before


def test_verify_fails_for_someone_elses_session_and_without_a_session(server: Any) -> None:
    base, _ = server
    code, lines = run_verify(base, "--jwt-secret", SECRET, "--user", USER,
                             "--session-id", OTHER_SESSION)
    assert code == 1 and verdicts(lines)["upload"] == "FAIL"
    assert "answered 404" in next(ln for ln in lines if ln.startswith("FAIL upload"))
    # The standalone app has no session list, so verify must say to pass --session-id.
    code, lines = run_verify(base, "--jwt-secret", SECRET, "--user", USER)
    assert code == 1 and lines[0].startswith("FAIL session:") and "--session-id" in lines[0]


def test_verify_fails_when_the_server_is_down() -> None:
    code, lines = run_verify(f"http://127.0.0.1:{free_port()}", "--token", "t", "--session-id", "s")
    assert code == 1
    assert lines[0].startswith("FAIL auth_required: request failed: ConnectError")


def tampered_app(settings: Settings, fault: str) -> Any:
    """The real app with one fault a deployment could have."""
    app = create_app(settings)

    @app.middleware("http")
    async def tamper(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        path = request.url.path
        if fault == "thumbnail_without_etag" and path.endswith("/thumbnail"):
            if "etag" in response.headers:
                del response.headers["etag"]
        if fault == "extra_history_key" and path.endswith("/history"):
            body = json.loads(b"".join([chunk async for chunk in response.body_iterator]))
            for message in body.get("history", []):
                for upload in message["uploads"]:
                    upload["thumbnail_large"] = upload["thumbnail_url"] + "?size=600"
            return JSONResponse(body, status_code=response.status_code)
        if fault == "file_cached_publicly" and "/thumbnail" not in path and "/files/" in path:
            response.headers["cache-control"] = "public, max-age=3600"
        return response

    return app


@pytest.mark.parametrize(
    "fault, failing",
    [
        ("thumbnail_without_etag", {"thumbnail_cache_headers", "thumbnail_not_modified"}),
        ("extra_history_key", {"history_keys"}),
        ("file_cached_publicly", {"file_cache_headers"}),
    ],
)
def test_verify_names_exactly_the_broken_checks(
    mongo_url: str, mongo_db: Database, fault: str, failing: set[str]
) -> None:
    add_sessions(mongo_db)
    app = tampered_app(Settings(mongodb_url=mongo_url, jwt_secret=SECRET), fault)
    with TestClient(app) as client:
        results = run_checks(client, issue_token(USER, SECRET), session_id=SESSION, echo=None)
    assert {r.name for r in results if not r.ok} == failing
    assert {r.name for r in results} == {*EXPECTED_CHECKS, "cleanup"}
    if fault == "extra_history_key":
        detail = next(r.detail for r in results if r.name == "history_keys")
        assert "extra ['thumbnail_large']" in detail and "missing []" in detail


# ------------------------------------------------------------------------------------ deploy
@dataclass
class Service:
    """A temp copy of the sample service and how to run the tools on it."""

    dir: Path
    env: dict[str, str]
    url: str  # the database URL deploy should end up using

    @property
    def ini(self) -> Path:
        return self.dir / "mongrate.ini"

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "app_patch.tools.deploy", "--app-dir", str(self.dir), *args],
            cwd=self.dir.parent, env=self.env, capture_output=True, text=True, timeout=180,
        )

    def mongrate_json(self, *args: str) -> Any:
        proc = subprocess.run(
            [PY, "-m", "mongrate", "-c", str(self.ini), "--url", self.url, "--json", *args],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def heads(self) -> list[str]:
        return sorted(self.mongrate_json("current")["heads"])

    def script_heads(self) -> list[str]:
        return sorted(h["revision"] for h in self.mongrate_json("heads"))

    def tree(self) -> dict[str, str]:
        """sha256 of every file (bytecode caches aside), by relative path."""
        return {
            str(p.relative_to(self.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.dir.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }

    def code(self) -> dict[str, str]:
        """:meth:`tree` without the backups folder."""
        return {k: v for k, v in self.tree().items() if not k.startswith("backups/")}

    def write_revisions(self, *revisions: tuple[str, str | None, str]) -> None:
        """(id, parent, upgrade body) revisions in the service's own versions folder."""
        folder = self.dir / "vers"
        folder.mkdir(exist_ok=True)
        for rev, parent, body in revisions:
            (folder / f"{rev}_step.py").write_text(
                f'"""test revision {rev}"""\nrevision = {rev!r}\ndown_revision = {parent!r}\n'
                "branch_labels = None\ndepends_on = None\n\n\n"
                f"def upgrade(op):\n    {body}\n\n\ndef downgrade(op):\n    op.restore_undo()\n",
                encoding="utf-8",
            )
        self.ini.write_text("[mongrate]\nscript_location = vers\n", encoding="utf-8")


@pytest.fixture
def service(tmp_path: Path, mongo_url: str, mongo_db: Database) -> Service:
    """The sample service, seeded pre-change data, mongrate.ini on the project's versions/.

    ``MONGODB_DATABASE_NAME`` names another database on purpose: the one in the URL wins.
    """
    target = tmp_path / "svc"
    shutil.copytree(FIXTURE_APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(MODERN_OVERLAY, target, dirs_exist_ok=True)
    (target / "mongrate.ini").write_text(
        f"[mongrate]\nscript_location = {ROOT / 'versions'}\nprepend_sys_path = {ROOT}\n",
        encoding="utf-8",
    )
    seed(mongo_db, sessions=3, messages_per_session=4, uploads=6, seed=3)
    env = clean_env(MONGODB_URL=mongo_url, MONGODB_DATABASE_NAME="not_this_one")
    return Service(target, env, mongo_url)


def chat_state(db: Database) -> dict[str, Any]:
    """Every document and index of the chat collections (what the app sees)."""
    present = set(db.list_collection_names())
    return {
        name: (
            sorted(repr(sorted(d.items())) for d in db[name].find()),
            sorted(i["name"] for i in db[name].list_indexes()) if name in present else [],
        )
        for name in CHAT
    }


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("deploy: error: ")
    return lines[0]


def service_cmds(log: Path, restart_code: int = 0) -> list[str]:
    """--stop-cmd / --restart-cmd that append ``s`` / ``r`` to ``log`` (the restart exits
    with ``restart_code``)."""

    def cmd(letter: str, code: int) -> str:
        return f"{PY} -c \"open('{log}', 'a').write('{letter}'); raise SystemExit({code})\""

    return ["--stop-cmd", cmd("s", 0), "--restart-cmd", cmd("r", restart_code)]


def test_dry_run_changes_nothing(service: Service, mongo_db: Database) -> None:
    # The service reads its database settings from .env here (URL without a database + name).
    name = database_from_url(service.url)
    (service.dir / ".env").write_text(
        f"MONGODB_URL={with_database(service.url, '')}\nMONGODB_DATABASE_NAME='{name}'\n"
    )
    service.env = clean_env()
    config = service.dir.parent / "ops-mongrate.ini"  # kept outside the app this time
    service.ini.rename(config)
    tree, data = service.tree(), chat_state(mongo_db)
    names = set(mongo_db.list_collection_names())
    counter = service.dir.parent / "service.log"
    service.env["PIP_NO_INDEX"] = "1"  # all of it is installed here: the resolution is offline
    proc = service.deploy(
        "--dry-run", "--mongrate-config", str(config), "--requirement", "mongrate[app]",
        *service_cmds(counter),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"database: {name} reachable" in out and f"mongrate: {config} loads" in out
    assert "would insert into app/main.py after line 9:" in out
    assert "requirements: will add mongrate[app]" in out
    assert "resolves requirements.txt + that line" in out
    assert "would install: nothing new" in out and "async driver: pymongo" in out
    assert "would add to requirements.txt: mongrate[app]" in out
    assert "-m pip install --quiet -r" in out and "would import app/main.py" in out
    assert "dry run: nothing was changed" in out
    assert "would run: " in out and "-m app_patch.tools.pregen_thumbnails" in out
    assert service.tree() == tree and not (service.dir / "backups").exists()
    assert chat_state(mongo_db) == data
    assert set(mongo_db.list_collection_names()) == names  # no mongrate_* written either
    assert not counter.exists()


def test_deploy_applies_once_and_rollback_restores(service: Service, mongo_db: Database) -> None:
    original_tree, original_data = service.tree(), chat_state(mongo_db)
    main_src = (service.dir / "app/main.py").read_text()
    req_src = (service.dir / "requirements.txt").read_text()
    counter = service.dir.parent / "service.log"
    pending = bool(service.script_heads())  # a fresh database: all of versions/ is pending
    for _ in range(2):
        proc = service.deploy("--skip-install", *service_cmds(counter))
        assert proc.returncode == 0, proc.stderr
    assert "backup: none needed" in proc.stdout and "router: already included" in proc.stdout
    # The first run pre-generated the thumbnails of every renderable image; the second had
    # nothing left to make.
    assert "deploy: thumbnails: done in" in proc.stdout and " 0 thumbnails made" in proc.stdout
    assert mongo_db["thumbnails.files"].count_documents({}) > 0
    # Stopped only while revisions ran, restarted by each run.
    assert counter.read_text() == ("s" if pending else "") + "rr"

    main = (service.dir / "app/main.py").read_text()
    assert main.count(deploy.ROUTER_IMPORT) == 1 and main.count(deploy.ROUTER_INCLUDE) == 1
    block = main[main.index(deploy.MARK_BEGIN) : main.index(deploy.MARK_END) + len(deploy.MARK_END)]
    assert main.replace(block + "\n\n", "") == main_src
    # --skip-install leaves requirements.txt (and the packages) to the operator.
    assert (service.dir / "requirements.txt").read_text() == req_src
    assert "requirements: not changed, nothing installed (--skip-install)" in proc.stdout

    backups = sorted((service.dir / "backups").iterdir())
    assert len(backups) == 1 and backups[0].name.startswith("pre_image_rendering_")
    manifest = json.loads((backups[0] / "manifest.json").read_text())
    assert manifest["heads"] == [] and manifest["database"] == database_from_url(service.url)
    assert (backups[0] / "app/main.py").read_text() == main_src
    assert (backups[0] / "requirements.txt").read_text() == req_src
    assert service.heads() == service.script_heads()  # [] while versions/ is empty

    # The patched service starts, keeps its own routes, and passes verify on migrated data:
    # its history path now answers 403 without a token, where the old route answered 200.
    session = mongo_db.chat_sessions.find_one({}, {"session_id": 1, "user_id": 1})
    env = {**service.env, "JWT_ACCESS_SECRET": SECRET}
    with uvicorn("app.main:app", service.dir, env, service.dir.parent / "svc.log") as base:
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        code, lines = run_verify(base, "--jwt-secret", SECRET, "--user", session["user_id"],
                                 "--session-id", session["session_id"])
    assert code == 0, lines
    assert verdicts(lines)["auth_required"] == "PASS"
    # The check's message is the service's data, not the deploy's: rollback leaves such data.
    mongo_db.chat_messages.delete_one({"_id": ObjectId(uploaded_ids(lines)[1])})

    patched = service.tree()
    elsewhere = {**service.env, "MONGODB_URL": with_database(service.url, "some_other_db")}
    proc = subprocess.run(
        [PY, "-m", "app_patch.tools.deploy", "--app-dir", str(service.dir), "--rollback",
         "--skip-restart"],
        env=elsewhere, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "was made for database" in error_line(proc)
    assert service.tree() == patched

    proc = service.deploy("--rollback", "--skip-restart")
    assert proc.returncode == 0, proc.stderr
    assert service.code() == original_tree
    assert service.heads() == [] and chat_state(mongo_db) == original_data
    proc = service.deploy("--rollback", "--skip-restart")
    assert proc.returncode == 1 and "no backup to roll back to" in error_line(proc)


SET_MARK = 'op.update_many("chat_messages", {}, {"$set": {"deploy_mark": 1}})'
ADD_INDEX = 'op.create_index("chat_messages", [("deploy_mark", 1)], name="deploy_mark")'


def test_rollback_undoes_deploys_one_at_a_time(service: Service, mongo_db: Database) -> None:
    service.write_revisions(("aaaa0001", None, SET_MARK))
    original_tree, original_data = service.tree(), chat_state(mongo_db)
    assert service.deploy("--skip-install", "--skip-restart").returncode == 0
    assert service.heads() == ["aaaa0001"]
    assert mongo_db.chat_messages.count_documents({"deploy_mark": 1}) == 12

    # A later release adds a revision: the code is patched already, the database is not.
    service.write_revisions(("aaaa0002", "aaaa0001", ADD_INDEX))
    (service.dir / "app/local_notes.txt").write_text("made on the server after the deploy")
    second_tree = service.code()
    proc = service.deploy("--skip-install", "--skip-restart")
    assert proc.returncode == 0, proc.stderr
    assert "1 revision(s) pending: aaaa0002" in proc.stdout
    assert service.heads() == ["aaaa0002"]
    assert len(list((service.dir / "backups").iterdir())) == 2

    proc = service.deploy("--rollback", "--dry-run", "--skip-restart")
    assert proc.returncode == 0, proc.stderr
    assert "database aaaa0002 -> aaaa0001" in proc.stdout
    assert "dry run: nothing was changed" in proc.stdout
    assert service.heads() == ["aaaa0002"] and service.code() == second_tree

    proc = service.deploy("--rollback", "--skip-restart")
    assert proc.returncode == 0, proc.stderr
    assert service.heads() == ["aaaa0001"]
    assert "deploy_mark" not in {i["name"] for i in mongo_db.chat_messages.list_indexes()}
    assert service.code() == second_tree

    counter = service.dir.parent / "service.log"
    proc = service.deploy("--rollback", *service_cmds(counter))
    assert proc.returncode == 0, proc.stderr
    assert service.heads() == [] and counter.read_text() == "sr"
    # Files the deploy did not make stay (as with the guide's cp -r); the rest is as before.
    kept = ("vers/aaaa0002_step.py", "app/local_notes.txt")
    assert service.code() == {**original_tree, **{k: second_tree[k] for k in kept}}
    assert chat_state(mongo_db) == original_data


@pytest.mark.parametrize("failure", ["revision", "restart"])
def test_a_failed_step_puts_code_and_database_back(
    service: Service, mongo_db: Database, failure: str
) -> None:
    boom = 'raise RuntimeError("boom on purpose")'
    second = boom if failure == "revision" else ADD_INDEX
    service.write_revisions(("bbbb0001", None, SET_MARK), ("bbbb0002", "bbbb0001", second))
    tree, data = service.tree(), chat_state(mongo_db)
    counter = service.dir.parent / "service.log"
    restart_code = 3 if failure == "restart" else 0
    proc = service.deploy("--skip-install", *service_cmds(counter, restart_code))
    assert proc.returncode == 1
    line = error_line(proc)
    if failure == "revision":
        assert "mongrate upgrade head failed" in line and "boom on purpose" in line
        assert line.endswith("; service restarted") and counter.read_text() == "sr"
    else:
        assert "restart command" in line and "service NOT restarted" in line
        assert counter.read_text() == "srr"  # the failed restart, then one with the old code
    assert "code put back as it was (main.py)" in line
    assert "database put back to base" in line
    assert service.tree() == tree  # this run's backup is gone too
    assert chat_state(mongo_db) == data and service.heads() == []


@pytest.mark.parametrize("installable", [True, False], ids=["satisfied", "missing-package"])
def test_install_step_runs_pip_offline(service: Service, installable: bool) -> None:
    # mongrate named already (so nothing is added); all of it installed here.
    requirements = service.dir / "requirements.txt"
    text = "fastapi>=0.104\npymongo>=4.6\nPillow>=10.0.1\nmongrate[app]  # ours\n"
    requirements.write_text(text + ("" if installable else "no-such-package-for-deploy-test\n"))
    service.env["PIP_NO_INDEX"] = "1"  # pip may find it all installed, or fail: never download
    tree = service.tree()
    proc = service.deploy("--skip-restart")
    if installable:
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "requirements: mongrate named already (mongrate[app]  # ours); not changed" in out
        assert "would install: nothing new" in out and "would change: nothing installed" in out
        assert "-m pip install --quiet -r" in out
        assert "imports: app_patch.service.router and its dependencies import" in out
        assert "service: app.main imports with the router included" in out
        assert requirements.read_text() == text
    else:
        # The resolution fails in the validation: refused before anything changed.
        assert proc.returncode == 2
        line = error_line(proc)
        assert "the requirements do not resolve:" in line and "no-such-package" in line
        assert service.tree() == tree


def _no_app(svc: Service) -> None:
    (svc.dir / "app/main.py").write_text(
        "from fastapi import FastAPI\n\n\ndef create_app():\n    return FastAPI()\n"
    )


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda s: s.ini.write_text("[mongrate\nscript_location = v\n"), "is not usable"),
        (lambda s: s.ini.unlink(), "mongrate.ini not found"),
        (_no_app, "has no module-level 'app = FastAPI(' line"),
        (lambda s: s.env.update(MONGODB_URL=f"mongodb://ops:hunter2@127.0.0.1:{free_port()}/x"),
         "database x not reachable at mongodb://ops:***@127.0.0.1:"),
    ],
    ids=["broken-ini", "no-ini", "no-fastapi-app", "unreachable-db"],
)
def test_bad_setups_are_refused_before_any_change(
    service: Service, mongo_db: Database, breakage: Any, message: str
) -> None:
    breakage(service)
    tree, data = service.tree(), chat_state(mongo_db)
    names = set(mongo_db.list_collection_names())
    proc = service.deploy("--skip-install", "--skip-restart")
    assert proc.returncode == 2
    assert message in error_line(proc) and "hunter2" not in proc.stdout + proc.stderr
    assert service.tree() == tree and chat_state(mongo_db) == data
    assert set(mongo_db.list_collection_names()) == names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--python", "/nonexistent/bin/python3"], "--python /nonexistent/bin/python3: no such"),
        (["--requirement", "fastapi>=0.104"], "--requirement 'fastapi>=0.104' does not name"),
        (["--wheel", "/nonexistent/mongrate-0.1.0-py3-none-any.whl"], "not a mongrate-*.whl"),
    ],
    ids=["no-python", "not-mongrate", "no-wheel"],
)
def test_bad_package_options_are_refused_before_any_change(
    service: Service, mongo_db: Database, args: list[str], message: str
) -> None:
    tree, data = service.tree(), chat_state(mongo_db)
    proc = service.deploy("--skip-restart", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in error_line(proc)
    assert service.tree() == tree and chat_state(mongo_db) == data
