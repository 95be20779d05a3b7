"""The CLI end to end in a temp project against the real server."""

from __future__ import annotations

import json
import time

import pytest
from deepdiff import DeepDiff

UP_A = 'op.update_many("items", {}, {"$set": {"a": 1}})'
UP_B = 'op.update_many("items", {"n": {"$gte": 5}}, {"$set": {"b": "x"}, "$unset": {"old": ""}})'


def docs(db):
    return sorted(db["items"].find(), key=lambda d: d["n"])


@pytest.fixture
def chain(project, mongo_db):
    mongo_db["items"].insert_many([{"n": i, **({"old": i} if i % 2 else {})} for i in range(12)])
    project.add("aaaa1111", None, body_up=UP_A, message="set a")
    project.add("bbbb2222", "aaaa1111", body_up=UP_B, message="set b")
    project.add("cccc3333", "bbbb2222", body_up='op.create_index("items", [("n", 1)], name="by_n")',
                message="index n")
    return project


def test_upgrade_current_history_downgrade(chain, mongo_db):
    before = docs(mongo_db)
    r = chain.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "now at cccc3333" in r.out
    assert mongo_db.items.count_documents({"a": 1}) == 12
    assert "by_n" in mongo_db.items.index_information()
    r = chain.run("current")
    assert r.code == 0 and "cccc3333" in r.out and "(head)" in r.out
    r = chain.run("history", "-i")
    lines = r.out.strip().splitlines()
    assert lines[0].startswith("bbbb2222 -> cccc3333") and "(current)" in lines[0]
    assert lines[-1].startswith("<base> -> aaaa1111")
    r = chain.run("downgrade", "-1")
    assert r.code == 0, r.err
    assert "by_n" not in mongo_db.items.index_information()
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]
    assert chain.run("upgrade", "head").code == 0
    r = chain.run("downgrade", "base")
    assert r.code == 0, r.err
    assert DeepDiff(before, docs(mongo_db)) == {}
    assert mongo_db.mongrate_version.count_documents({}) == 0
    log = list(mongo_db.mongrate_log.find({"direction": {"$in": ["upgrade", "downgrade"]}}))
    assert {e["status"] for e in log} == {"succeeded"}
    assert all(e["checksum"] and e["host"] and e["pid"] and e["duration"] is not None for e in log)


def test_relative_and_partial_targets(chain, mongo_db):
    assert chain.run("upgrade", "+1").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]
    assert chain.run("upgrade", "bbbb").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]
    r = chain.run("upgrade", "+2")
    assert r.code == 2 and "error" in r.err
    assert chain.run("upgrade", "+1").code == 0
    assert chain.run("downgrade", "-2").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]
    r = chain.run("downgrade", "-3")
    assert r.code == 2 and r.err.count("\n") == 1


def test_dry_run_writes_nothing(chain, mongo_db):
    before = {n: list(mongo_db[n].find()) for n in mongo_db.list_collection_names()}
    r = chain.run("upgrade", "head", "--dry-run")
    assert r.code == 0, r.err
    assert "dry run: nothing was written" in r.out
    assert "update_many items" in r.out and "create_index items" in r.out
    after = {n: list(mongo_db[n].find()) for n in mongo_db.list_collection_names()}
    assert DeepDiff(before, after) == {}
    r = chain.run("--json", "upgrade", "head", "--dry-run")
    data = json.loads(r.out)
    assert [s["revision"] for s in data["steps"]] == ["aaaa1111", "bbbb2222", "cccc3333"]
    assert all(s["writes"] for s in data["steps"])


def test_revision_and_merge_and_branches(project, mongo_db):
    r = project.run("revision", "-m", "first step", "--rev-id", "f1f1f1f1")
    assert r.code == 0, r.err
    r = project.run("revision", "-m", "second")
    assert r.code == 0
    r = project.run("revision", "-m", "side", "--head", "f1f1f1f1", "--rev-id", "5de5de5d")
    assert r.code == 2 and "--splice" in r.err
    r = project.run("revision", "-m", "side", "--head", "f1f1f1f1", "--splice",
                    "--branch-label", "side", "--rev-id", "5de5de5d")
    assert r.code == 0, r.err
    r = project.run("heads")
    assert len(r.out.strip().splitlines()) == 2
    r = project.run("upgrade", "head")
    assert r.code == 2 and "heads" in r.err and "merge" in r.err
    assert project.run("upgrade", "side@head").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["5de5de5d"]
    assert project.run("upgrade", "heads").code == 0
    assert len(mongo_db.mongrate_version.distinct("_id")) == 2
    r = project.run("downgrade", "-1")
    assert r.code == 2 and "heads" in r.err
    r = project.run("branches")
    assert "f1f1f1f1" in r.out and "5de5de5d" in r.out
    r = project.run("merge", "heads", "-m", "join", "--rev-id", "3e3e3e3e")
    assert r.code == 0, r.err
    r = project.run("check")
    assert r.code == 1 and "not applied" in r.err
    assert project.run("upgrade", "head").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["3e3e3e3e"]
    assert project.run("check").code == 0
    assert project.run("downgrade", "-1").code == 0  # unmerge: both parents are heads again
    assert len(mongo_db.mongrate_version.distinct("_id")) == 2
    assert project.run("downgrade", "side@base").code == 0
    heads = mongo_db.mongrate_version.distinct("_id")
    assert len(heads) == 1 and heads[0] != "5de5de5d"
    r = project.run("show", "3e3e")
    assert "Revises" in r.out or "3e3e3e3e" in r.out


def test_stamp_and_check_changed_file(chain, mongo_db):
    r = chain.run("stamp", "bbbb2222")
    assert r.code == 0, r.err
    assert mongo_db.items.count_documents({"a": 1}) == 0  # stamp runs nothing
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]
    assert chain.run("stamp", "base", "--purge").code == 0
    assert mongo_db.mongrate_version.count_documents({}) == 0
    assert chain.run("upgrade", "head").code == 0
    path = chain.versions / "aaaa1111_r.py"
    path.write_text(path.read_text() + "\n# edited after it ran\n")
    r = chain.run("check")
    assert r.code == 1 and "changed since revision aaaa1111 ran" in r.err


def test_history_range_and_json(chain):
    assert chain.run("upgrade", "aaaa1111").code == 0
    r = chain.run("history", "-r", "current:")
    assert [ln.split(" -> ")[1].split()[0].rstrip(",") for ln in r.out.strip().splitlines()] == [
        "cccc3333", "bbbb2222", "aaaa1111"]
    r = chain.run("history", "-v")
    assert "Revision ID: aaaa1111" in r.out and "log: " in r.out and "succeeded" in r.out
    r = chain.run("--json", "history")
    assert [d["revision"] for d in json.loads(r.out)] == ["cccc3333", "bbbb2222", "aaaa1111"]


def test_failed_revision_exits_1_and_is_logged(project, mongo_db):
    project.add("aaaa1111", None, body_up="pass")
    project.add("bbbb2222", "aaaa1111", body_up='raise RuntimeError("boom")')
    r = project.run("upgrade", "head")
    assert r.code == 1
    assert "bbbb2222" in r.err and "boom" in r.err and "Traceback" not in r.err
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]
    entry = mongo_db.mongrate_log.find_one({"revision": "bbbb2222"})
    assert entry["status"] == "failed" and "boom" in entry["error"]
    r = project.run("-v", "upgrade", "head")
    assert "Traceback" in r.err


def test_init_creates_a_working_project(project, tmp_path, mongo_url):
    new = tmp_path / "new"
    r = project.run("--url", mongo_url, "init", str(new))
    assert r.code == 0, r.err
    assert (new / "mongrate.ini").exists() and (new / "versions").is_dir()
    assert project.run("--url", mongo_url, "init", str(new)).code == 2  # never overwrites
    project.ini = new / "mongrate.ini"
    r = project.run("--url", mongo_url, "revision", "-m", "hello")
    assert r.code == 0, r.err
    assert project.run("--url", mongo_url, "upgrade", "head").code == 0
    assert "hello" in project.run("--url", mongo_url, "current").out


def test_stamp_base_empties_and_unknown_heads_are_dropped(chain, mongo_db):
    assert chain.run("upgrade", "head").code == 0
    assert chain.run("stamp", "base").code == 0
    assert mongo_db.mongrate_version.count_documents({}) == 0
    mongo_db.mongrate_version.insert_one({"_id": "zzzzzzzz"})
    r = chain.run("check")
    assert r.code == 1 and "--purge" in r.err
    r = chain.run("stamp", "bbbb2222")
    assert r.code == 0 and "dropping head zzzzzzzz" in r.err
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]


def test_check_reports_the_last_failed_step(project, mongo_db):
    project.add("aaaa1111", None, body_up='raise ValueError("bad data")')
    assert project.run("upgrade", "head").code == 1
    r = project.run("check")
    assert r.code == 1 and "aaaa1111 failed" in r.err and "bad data" in r.err


def test_an_interrupted_downgrade_is_not_hidden_by_other_commands(chain, mongo_db):
    assert chain.run("upgrade", "head").code == 0
    # what a downgrade of cccc3333 killed mid-way leaves behind: a started entry
    mongo_db.mongrate_log.insert_one({
        "revision": "cccc3333", "direction": "downgrade", "status": "started",
        "started_at": mongo_db.mongrate_log.find_one()["started_at"], "host": "h", "pid": 1})
    r = chain.run("upgrade", "head")
    assert r.code == 1 and "downgrade of cccc3333 was interrupted" in r.err
    assert "mongrate downgrade bbbb2222" in r.err
    assert chain.run("check").code == 1
    r = chain.run("downgrade", "bbbb2222")
    assert r.code == 0 and "resuming" in r.err
    assert mongo_db.mongrate_log.count_documents({"status": "started"}) == 0
    assert chain.run("check").code == 1  # now simply one revision pending


def test_current_names_recorded_revisions_without_a_file(project, mongo_db):
    project.add("aaaa1111", None)
    mongo_db.mongrate_version.insert_many([{"_id": "zzzz9999"}, {"_id": "yyyy8888"}])
    r = project.run("current")
    assert r.code == 0, r.err
    assert "<base>" not in r.out
    for rev in ("zzzz9999", "yyyy8888"):
        assert f"{rev} (recorded in mongrate_version, but no revision file defines it" in r.out
    mongo_db.mongrate_version.delete_many({})
    assert "<base> (no revision applied)" in project.run("current").out


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_current_tells_a_running_step_from_an_interrupted_one(project, mongo_db):
    project.add("aaaa1111", None)
    project.add("bbbb2222", "aaaa1111", body_up="for _ in range(300):\n    time.sleep(0.1)")
    child = project.spawn("upgrade", "head")
    try:
        wait_for(lambda: mongo_db.mongrate_log.find_one({"revision": "bbbb2222",
                                                          "status": "started"}),
                 what="bbbb2222 to start")
        time.sleep(1.2)  # past a lease renewal (every 1 s with the 3 s lease)
        r = project.run("current")
        assert r.code == 0, r.err
        line = next(ln for ln in r.out.splitlines() if "bbbb2222" in ln and "upgrade of" in ln)
        assert line.startswith("RUNNING: upgrade of bbbb2222 since ")
        assert f"pid {child.pid} ('mongrate upgrade head'), which holds the lock" in line
        assert "lease renewed until" in line
        assert "INTERRUPTED" not in r.out
        r = project.run("check")
        assert r.code == 1 and "upgrade of bbbb2222 is running" in r.err
        assert "interrupted" not in r.err
    finally:
        child.kill()
        child.wait()
    # a killed run on this host is seen at once, its lease (3 s) still live
    out = project.run("current").out
    assert "INTERRUPTED: upgrade of bbbb2222 started" in out and "RUNNING" not in out
    assert f"pid {child.pid}, whose run is gone; the next 'upgrade' resumes it" in out
