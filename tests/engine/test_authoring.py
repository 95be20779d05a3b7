"""A revision author's view, through the real command: the helpers, the write strategy, a
downgrade that never lies, and what check says about leftovers."""

from __future__ import annotations

import re

import pytest
from pymongo import monitoring

from mongrate.mongo.collections import is_ferretdb_v1
from mongrate.testing.kit import snapshot

#: Holds on the rewrite strategy only (FerretDB 1.x); the probe picks in_place on
#: mongo-java-server, so its folded passes, copies, swaps and their kill points never happen
REWRITE_ONLY = pytest.mark.skip_server(
    "javaserver", reason="checks the rewrite strategy (folded passes, copies and swaps, their "
                         "kill points); the probe picks in_place on this server")


UNDO = "mongrate_undo"


@pytest.fixture
def items(mongo_db):
    mongo_db.items.insert_many([{"_id": i, "old": i, "n": i, "tail": True} for i in range(100)])


@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_a_failed_revision_is_undone_by_downgrade_base(project, mongo_db, items, strategy):
    """Issue 11, case 4: a WriteError at document 55 of 100; downgrade base must not say
    'now at base' while the first documents keep the new fields."""
    project.write_ini(write_strategy=strategy)
    project.add("aaaa1111", None, body_up="""
        def change(doc):
            if doc["n"] == 55:
                raise ValueError("bad document 55")
            doc["new"] = 1
            doc.pop("old")
        op.change_each("items", change)
    """)
    before = snapshot(mongo_db)
    r = project.run("upgrade", "head")
    assert r.code == 1 and "bad document 55" in r.err
    assert "'mongrate downgrade' reverses what it wrote" in r.err
    r = project.run("check")
    assert r.code == 1 and "aaaa1111" in r.err
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert "reverted the partial upgrade of aaaa1111" in r.out
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names() if n.startswith(UNDO + "_")] == []
    assert mongo_db[UNDO].count_documents({"revision": "aaaa1111"}) == 0
    r = project.run("upgrade", "head")  # the same data fails the same way, and is undone
    assert r.code == 1 and "bad document 55" in r.err
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before


def test_a_downgrade_that_forgets_restore_undo_still_restores(project, mongo_db, items):
    """Issue 11, case 3: an upgrade's recorded changes are never left behind by a
    downgrade that reports success."""
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 1}})',
                body_down="pass")
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 0
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert "restored 100 recorded changes its downgrade left" in r.err
    assert snapshot(mongo_db) == before
    assert project.run("check").code == 1  # pending revision, but no leftovers
    assert "mongrate_undo_" not in project.run("check").err


def test_strategy_is_shown_in_verbose_and_dry_run_and_set_by_the_ini(project, mongo_db, items):
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 1}})')
    r = project.run("upgrade", "head", "--dry-run")
    if is_ferretdb_v1(mongo_db):
        assert "write strategy: rewrite (auto: FerretDB 1.x" in r.err
        assert "changes 100 of 100 matching documents (rewrite)" in r.out
    else:  # a dry run writes nothing, so it does not probe
        assert "write strategy: in_place (auto, assumed for the dry run" in r.err
        assert "changes 100 of 100 matching documents (in-place)" in r.out
    project.write_ini(write_strategy="in_place")
    r = project.run("-v", "upgrade", "head")
    assert r.code == 0, r.err
    assert "write strategy: in_place (set by write_strategy in the config)" in r.err
    r = project.run("downgrade", "base")
    assert "write strategy" not in r.err  # only with -v or --dry-run
    project.write_ini(write_strategy="sideways")
    r = project.run("upgrade", "head")
    assert r.code == 2 and "'write_strategy' must be one of auto, in_place, rewrite" in r.err


def test_check_reports_leftover_undo_and_scratch_collections(project, mongo_db, items):
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 1}})')
    assert project.run("upgrade", "head").code == 0
    assert project.run("check").code == 0
    mongo_db["mongrate_tmp_aaaa1111_9_items"].insert_one({"_id": 1})
    mongo_db[f"{UNDO}_zzzz9999-items"].insert_one({"_id": 1})
    r = project.run("check")
    assert r.code == 1
    assert "mongrate_tmp_aaaa1111_9_items is a scratch copy left by a run" in r.err
    assert f"{UNDO}_zzzz9999-items holds recorded changes of a revision no file defines" in r.err


@REWRITE_ONLY
def test_two_revisions_changing_every_document_are_written_in_one_pass(project, mongo_db,
                                                                       items):
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$inc": {"n": 1}})')
    project.add("bbbb2222", "aaaa1111",
                body_up='op.change_each("items", lambda d: d.update(n=d["n"] * 2))')
    before = snapshot(mongo_db)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "items: one pass writes the changes of aaaa1111:1, bbbb2222:1" in r.err
    assert sorted(d["n"] for d in mongo_db.items.find()) == [2 * (i + 1) for i in range(100)]
    assert project.run("downgrade", "aaaa1111").code == 0  # one revision at a time
    assert sorted(d["n"] for d in mongo_db.items.find()) == [i + 1 for i in range(100)]
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before


def test_reading_through_op_db_sees_changes_made_before(project, mongo_db, items):
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 1}})')
    project.add("bbbb2222", "aaaa1111", body_up="""
        n = op.db.items.count_documents({"x": 1})
        op.report(seen=n)
        assert n == 100
    """)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert re.search(r"^ +seen: +100$", r.out, re.M)


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        coll = event.command.get(event.command_name)
        self.seen.append((event.command_name, coll if isinstance(coll, str) else "",
                          dict(event.command)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_heads_log_lock_and_undo_use_majority_concerns(project, mongo_db, items, monkeypatch):
    """On a replica set, what decides a run's next step is never written to, or read from,
    one member alone. Checked on the commands the driver sends."""
    from mongrate.runtime import store as store_module

    listener = Commands()
    real = store_module.MongoClient

    def client(*args, **kwargs):
        kwargs["event_listeners"] = [*kwargs.get("event_listeners", ()), listener]
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "MongoClient", client)
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 1}})')
    assert project.run("upgrade", "head").code == 0
    own = ("mongrate_version", "mongrate_log", "mongrate_lock", "mongrate_undo")
    writes = [c for name, coll, c in listener.seen
              if name in ("insert", "update", "delete") and coll in own]
    reads = [c for name, coll, c in listener.seen if name == "find" and coll in own]
    assert {"mongrate_version", "mongrate_log", "mongrate_lock", "mongrate_undo"} <= {
        c[n] for c in writes for n in ("insert", "update", "delete") if n in c}
    assert writes and all(c.get("writeConcern", {}).get("w") == "majority" for c in writes)
    assert reads and all(c.get("readConcern", {}).get("level") == "majority" for c in reads)
    side = [c for name, coll, c in listener.seen
            if name == "insert" and coll.startswith("mongrate_undo_")]
    assert side and all(c.get("writeConcern", {}).get("w") == "majority" for c in side)


def test_a_step_that_lost_its_lock_stops_before_its_next_write(project, mongo_db):
    """A failover (or a long pause) costs the lease; another run takes it over. The step
    must not write one more batch."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(200)])
    project.write_ini(write_strategy="in_place", batch_size="10", lock_lease_seconds="1")
    project.add("aaaa1111", None, body_up="""
        def slow(doc):
            if doc["_id"] == 20:
                op.db.client[op.db.name]["mongrate_lock"].insert_one(
                    {"_id": "mongrate:999999999999", "owner": "other", "host": "h", "pid": 1,
                     "command": "takeover", "acquired_at": __import__("datetime").datetime(2099, 1, 1),
                     "expires_at": __import__("datetime").datetime(2099, 1, 1), "released": False})
                time.sleep(1.5)  # the heartbeat sees the later lease
            doc["n"] = -1
        op.change_each("items", slow)
    """)
    r = project.run("upgrade", "head")
    assert r.code == 3 and "lost the lock" in r.err
    changed = mongo_db.items.count_documents({"n": -1})
    assert changed <= 30  # at most the batches already handed to the writer
    assert mongo_db.items.count_documents({}) == 200


def test_an_upgrade_does_not_build_on_a_half_done_downgrade(project, mongo_db, items):
    path = project.add("aaaa1111", None,
                       body_up='op.update_many("items", {}, {"$set": {"x": 1}})',
                       body_down='op.restore_undo()\nraise RuntimeError("disk full")')
    project.add("bbbb2222", "aaaa1111")
    assert project.run("upgrade", "aaaa1111").code == 0
    r = project.run("downgrade", "base")
    assert r.code == 1 and "disk full" in r.err
    r = project.run("upgrade", "head")
    assert r.code == 1
    assert "the downgrade of aaaa1111 failed part way" in r.err
    assert "'mongrate downgrade base'" in r.err
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]  # nothing ran
    path.write_text(path.read_text().replace('raise RuntimeError("disk full")', "pass"))
    assert project.run("downgrade", "base").code == 0
    assert project.run("upgrade", "head").code == 0
