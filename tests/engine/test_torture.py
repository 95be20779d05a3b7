"""Concurrent runs and SIGKILL mid-revision, with real child processes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from deepdiff import DeepDiff

#: FerretDB only: the lock, the CLI and the resume they torture are the engine's, the same on
#: every server; the server's own parts run on both (test_lock's six simultaneous clients,
#: test_killpoints' kill at every write of both strategies).
pytestmark = [pytest.mark.slow, pytest.mark.mongo_servers("ferretdb", "url")]

SLOW_UP = """
for i in range(40):
    op.update_many("items", {"n": {"$mod": [40, i]}}, {"$set": {"stage": i, "done": True}})
    time.sleep(0.05)
"""


def items(db):
    return sorted(db["items"].find({}, {"_id": 0}), key=lambda d: d["n"])


QUICK_UP = """
for i in range(4):
    op.update_many("items", {"n": {"$mod": [4, i]}}, {"$set": {"stage": i, "done": True}})
    time.sleep(0.1)
"""


@pytest.fixture
def three(project, mongo_db, request):
    mongo_db.items.insert_many([{"n": i, **({"stage": "orig"} if i % 3 == 0 else {})}
                                for i in range(400)])
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$inc": {"count": 1}})')
    project.add("bbbb2222", "aaaa1111", body_up=getattr(request, "param", SLOW_UP))
    project.add("cccc3333", "bbbb2222", body_up='op.create_index("items", [("n", 1)], name="by_n")')
    return project


@pytest.mark.parametrize("three", [QUICK_UP], indirect=True)
def test_six_concurrent_upgrades_apply_each_revision_once(three, mongo_db, mongo_client,
                                                          mongo_server):
    # ten rounds on FerretDB; three on mongo-java-server, where each round also probes the
    # write strategy (~20 s a round on a busy machine: the suite's time budget)
    rounds = 3 if mongo_server == "javaserver" else 10
    for round_ in range(rounds):
        procs = [three.spawn("upgrade", "head", "--lock-timeout", "60") for _ in range(6)]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
        assert all(code == 0 for code, _, _ in results), results
        # every round starts from base: one runner applies all three, five find nothing
        assert sum("upgraded" in out for _, out, _ in results) == 1
        assert sum("nothing to upgrade" in out for _, out, _ in results) == 5
        assert mongo_db.items.count_documents({"count": 1}) == 400  # $inc ran exactly once
        ups = mongo_db.mongrate_log.count_documents({"direction": "upgrade", "status": "succeeded"})
        assert ups == 3
        assert any("waiting for the lock" in err for _, _, err in results)
        if round_ < rounds - 1:  # next round starts from base again via a clean downgrade
            assert three.run("downgrade", "base").code == 0
            mongo_db.mongrate_log.delete_many({})
            assert mongo_db.items.count_documents({"count": {"$exists": True}}) == 0


def test_sigkill_mid_revision_then_resume_equals_clean_run(three, mongo_db, mongo_client):
    clean_db = mongo_client[mongo_db.name + "_clean"]
    clean_db.items.insert_many(list(mongo_db.items.find({}, {"_id": 0})))
    proc = three.spawn("upgrade", "head")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once the slow revision is half way
        if mongo_db.items.count_documents({"stage": {"$gte": 15}}) > 0:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]
    assert mongo_db.mongrate_log.count_documents({"status": "started"}) == 1
    r = three.run("current")
    assert "INTERRUPTED" in r.out and "bbbb2222" in r.out
    r = three.run("check")
    assert r.code == 1 and "interrupted" in r.err
    r = three.run("upgrade", "head", "--lock-timeout", "20")  # waits out the 3 s lease
    assert r.code == 0, r.err
    assert "interrupted upgrade of bbbb2222" in r.err and "resuming" in r.err
    assert mongo_db.mongrate_log.find_one({"revision": "bbbb2222", "status": "interrupted"})
    # the same revisions on a clean copy, uninterrupted
    clean = three.__class__(three.path, three.url.rsplit("/", 1)[0] + "/" + clean_db.name,
                            three._capsys)
    clean.ini = three.path / "clean.ini"
    clean.write_ini()
    assert clean.run("upgrade", "head").code == 0
    assert DeepDiff(items(clean_db), items(mongo_db)) == {}
    # and the interrupted run's downgrade still restores the original exactly
    assert three.run("downgrade", "base").code == 0
    mongo_client.drop_database(clean_db.name)
    assert mongo_db.items.count_documents({"stage": {"$type": "int"}}) == 0
    assert mongo_db.items.count_documents({"stage": "orig"}) == 134


def test_lock_timeout_exits_3_naming_the_holder(three, mongo_db):
    holder = three.spawn("upgrade", "head")
    deadline = time.monotonic() + 30
    while not mongo_db.mongrate_lock.find_one({"owner": {"$ne": None}}):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = three.run("upgrade", "head", "--lock-timeout", "0.5")
    assert r.code == 3
    assert "lock not acquired" in r.err and "pid" in r.err
    assert holder.wait(timeout=120) == 0
