"""Migrations with the application writing: no acknowledged application write is lost.

The deterministic cases put the application's write exactly between mongrate's read and
its write (inside the change function, or in the lock check that runs between them); the
slow cases run bounded writer threads during whole upgrades and downgrades.
"""

from __future__ import annotations

import time

import pytest
from pymongo import MongoClient

from mongrate.errors import RewriteError
from mongrate.operations.ops import reported
from mongrate.testing.kit import revision_op, snapshot
from mongrate.testing.writers import AppWriters


def op_for(db, strategy, direction="upgrade", revision="r1", **kw):
    return revision_op(db, revision, direction, write_strategy=strategy, batch_size=4,
                       defer=False, **kw)


@pytest.fixture
def app(mongo_url):
    """The application: its own client, as a separate process would have."""
    client = MongoClient(mongo_url)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def messages(mongo_db):
    mongo_db.msgs.insert_many([{"_id": i, "meta": {"render": 0}, "n": i} for i in range(10)])


# ------------------------------------------------------------ in place, upgrade
def test_change_each_rereads_a_document_the_application_wrote_meanwhile(mongo_db, app,
                                                                        messages):
    """The application sets a sibling sub-field between mongrate's read and its write of
    the same top-level field: the stale ``$set`` of ``meta`` must not land."""
    calls = {}

    def render(doc):
        calls[doc["_id"]] = calls.get(doc["_id"], 0) + 1
        if doc["_id"] == 3 and calls[3] == 1:
            app.msgs.update_one({"_id": 3}, {"$set": {"meta.seen": True}})
        doc["meta"]["render"] = 1

    with op_for(mongo_db, "in_place") as op:
        assert op.change_each("msgs", render) == 10
    assert mongo_db.msgs.find_one({"_id": 3})["meta"] == {"render": 1, "seen": True}
    assert calls[3] == 2  # read again and computed again
    assert reported(op)["msgs changed: written by the application during the pass"] == 1
    with op_for(mongo_db, "in_place", "downgrade") as down:
        down.restore_undo()
    # exact for what mongrate changed: render back, the application's write kept
    assert mongo_db.msgs.find_one({"_id": 3})["meta"] == {"render": 0, "seen": True}
    assert mongo_db.msgs.count_documents({"meta": {"render": 0}}) == 9


def test_update_many_rereads_a_document_the_application_wrote_meanwhile(mongo_db, app,
                                                                        messages):
    """The application changes a field the update reads between mongrate's read (which
    recorded the prior value) and the server's update: the record must say what was there
    when the update landed, and the downgrade must keep the application's write."""
    with op_for(mongo_db, "in_place") as op:
        hit = []

        def between_read_and_write():
            if not hit:
                hit.append(1)
                app.msgs.update_one({"_id": 1}, {"$set": {"n": 100}})

        op._engine.guard = between_read_and_write
        assert op.update_many("msgs", {}, {"$inc": {"n": 1}}) == 10
        op._engine.guard = None
    assert mongo_db.msgs.find_one({"_id": 1})["n"] == 101
    with op_for(mongo_db, "in_place", "downgrade") as down:
        down.restore_undo()
    assert mongo_db.msgs.find_one({"_id": 1})["n"] == 100
    assert sorted(d["n"] for d in mongo_db.msgs.find()) == [0, *range(2, 10), 100]


def test_a_document_deleted_meanwhile_stays_deleted(mongo_db, app, messages):
    def render(doc):
        if doc["_id"] == 5:
            app.msgs.delete_one({"_id": 5})
        doc["meta"]["render"] = 1

    with op_for(mongo_db, "in_place") as op:
        assert op.change_each("msgs", render) == 9
    assert mongo_db.msgs.find_one({"_id": 5}) is None
    assert mongo_db.msgs.count_documents({"meta.render": 1}) == 9


# ------------------------------------------------------------ in place, downgrade
def test_restore_keeps_what_the_application_wrote_since(mongo_db, app, messages):
    """A field mongrate changed and the application wrote since keeps the application's
    value; in a subdocument, the paths the application did not write go back."""
    def change(doc):
        doc["meta"]["render"] = 1
        doc["meta"]["size"] = 10
        doc["n"] = -doc["n"]
        doc["flag"] = True

    before = snapshot(mongo_db)
    with op_for(mongo_db, "in_place") as op:
        op.change_each("msgs", change)
    app.msgs.update_one({"_id": 2}, {"$set": {"n": 7, "flag": False}})
    app.msgs.update_one({"_id": 4}, {"$set": {"meta.render": 5, "meta.seen": 1}})
    with op_for(mongo_db, "in_place", "downgrade") as down:
        down.restore_undo()
    assert mongo_db.msgs.find_one({"_id": 2}) == {"_id": 2, "meta": {"render": 0}, "n": 7,
                                                   "flag": False}
    assert mongo_db.msgs.find_one({"_id": 4}) == {"_id": 4, "meta": {"render": 5, "seen": 1},
                                                   "n": 4}
    assert reported(down)["msgs restored: fields the application wrote since, kept"] == 3
    others = {k: v for k, v in snapshot(mongo_db).items()}
    assert len(others["msgs"]["docs"]) == len(before["msgs"]["docs"])
    untouched = [d for d in mongo_db.msgs.find() if d["_id"] not in (2, 4)]
    assert untouched == [{"_id": i, "meta": {"render": 0}, "n": i} for i in range(10)
                         if i not in (2, 4)]


def test_a_removed_field_comes_back_on_every_server(mongo_db, app):
    """Putting a field back before others needs a replacement, conditional on the whole
    document as read ($expr); servers without it (mongo-java-server, FerretDB 1.x) put it
    back by $set, and a field the application wrote since stays."""
    mongo_db.msgs.insert_many([{"_id": i, "legacy": i, "n": i} for i in range(6)])
    def drop(doc):
        del doc["legacy"]

    with op_for(mongo_db, "in_place") as op:
        op.change_each("msgs", drop)
    app.msgs.update_one({"_id": 1}, {"$set": {"legacy": "app"}})  # re-added since: stays
    with op_for(mongo_db, "in_place", "downgrade") as down:
        down.restore_undo()
    docs = list(mongo_db.msgs.find())
    # back in its place where the server compares whole documents ($expr: MongoDB);
    # FerretDB 1.x and mongo-java-server lack it, and there it goes back last
    assert all(set(d) == {"_id", "legacy", "n"} for d in docs)
    assert [d["legacy"] for d in docs] == [0, "app", 2, 3, 4, 5]


def test_a_field_the_application_adds_during_a_restore_is_not_replaced_away(mongo_db, app):
    """Re-adding a removed field in its place takes a replacement; a field the application
    added between the restore's read and its write must survive it (where the server
    cannot compare whole documents, the field goes back by $set instead)."""
    mongo_db.msgs.insert_many([{"_id": i, "legacy": i, "n": i} for i in range(6)])

    def drop(doc):
        del doc["legacy"]

    with op_for(mongo_db, "in_place") as op:
        op.change_each("msgs", drop)
    with op_for(mongo_db, "in_place", "downgrade") as down:
        hit = []

        def between_read_and_write():
            if not hit:
                hit.append(1)
                app.msgs.update_one({"_id": 2}, {"$set": {"added": True}})

        down._engine.guard = between_read_and_write
        down.restore_undo()
    assert mongo_db.msgs.find_one({"_id": 2}, {"_id": 0}) == {"legacy": 2, "n": 2,
                                                              "added": True}
    assert sorted(d["legacy"] for d in mongo_db.msgs.find()) == list(range(6))


# ------------------------------------------------------------------ rewrite
def test_rewrite_refuses_its_swap_when_a_document_was_updated_during_the_copy(
        mongo_db, app, messages):
    """The count does not change; the update would have been lost with the swap."""
    def render(doc):
        if doc["_id"] == 2:
            app.msgs.update_one({"_id": 7}, {"$set": {"n": 70}})
        doc["meta"]["render"] = 1

    with pytest.raises(RewriteError, match="stop the application's writers"):
        with op_for(mongo_db, "rewrite") as op:
            op.change_each("msgs", render)
    assert mongo_db.msgs.find_one({"_id": 7}) == {"_id": 7, "meta": {"render": 0}, "n": 70}
    assert mongo_db.msgs.count_documents({"meta.render": 0}) == 10


# ------------------------------------------------------------ the commands
GROUP_RACE = """
app = op.db.client[op.db.name]  # another client's view, as the application's


def render(grp, msgs, users):
    for m in msgs:
        if m["_id"] == 3:
            app.msgs.update_one({"_id": 3}, {"$set": {"meta.seen": True}})
        m["meta"]["render"] = 1
    for u in users:
        u["count"] = len(msgs)


op.change_groups(render, msgs=op.source("msgs", key="grp"),
                 users=op.source("users", key="_id"))
"""


def test_check_says_what_the_application_wrote_during_a_pass(project, mongo_db):
    """A change_groups document the application wrote between read and write is left as
    it wrote it (its group is not read again); the log and check say so."""
    mongo_db.msgs.insert_many([{"_id": i, "meta": {"render": 0}, "grp": i % 3}
                               for i in range(9)])
    mongo_db.users.insert_many([{"_id": g} for g in range(3)])
    project.write_ini(write_strategy="in_place")
    project.add("r1", None, body_up=GROUP_RACE)
    assert project.run("upgrade", "head").code == 0
    assert mongo_db.msgs.find_one({"_id": 3})["meta"] == {"render": 0, "seen": True}
    assert mongo_db.msgs.count_documents({"meta.render": 1}) == 8
    result = project.run("check")
    assert result.code == 1
    assert ("r1: 1 document(s) the application wrote during its pass are left as it wrote "
            "them, not migrated (1 written during the pass in all") in result.err


REWRITE_RACE = """
app = op.db.client[op.db.name]


def render(doc):
    if doc["_id"] == 2:
        app.msgs.update_one({"_id": 7}, {"$set": {"n": 70}})
    doc["meta"]["render"] = 1


op.change_each("msgs", render)
"""


def test_rewrite_with_a_writer_exits_non_zero_with_one_line(project, mongo_db):
    mongo_db.msgs.insert_many([{"_id": i, "meta": {"render": 0}, "n": i} for i in range(10)])
    project.write_ini(write_strategy="rewrite")
    project.add("r1", None, body_up=REWRITE_RACE)
    result = project.run("upgrade", "head")
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.startswith("mongrate:")]
    assert len(lines) == 1 and "stop the application's writers" in lines[0], result.err
    assert "Traceback" not in result.err
    assert mongo_db.msgs.find_one({"_id": 7}) == {"_id": 7, "meta": {"render": 0}, "n": 70}
    assert mongo_db.msgs.count_documents({"meta.render": 0}) == 10


# ------------------------------------------------------------ writers running
N_DOCS = 1500
GROUPS = 150


def _seed(db) -> None:
    db.msgs.insert_many([{"_id": i, "meta": {"render": 0}, "n": i, "grp": i % GROUPS}
                         for i in range(N_DOCS)])
    db.users.insert_many([{"_id": g, "name": f"u{g}"} for g in range(GROUPS)])


def _migrate(op, helper: str) -> None:
    if helper == "update_many":
        op.update_many("msgs", {}, {"$set": {"meta.render": 1, "v": 2}})
    elif helper == "change_each":
        def render(doc):
            doc["meta"]["render"] = 1
            doc["v"] = 2
        op.change_each("msgs", render)
    else:
        def count(grp, msgs, users):
            for m in msgs:
                m["meta"]["render"] = 1
                m["v"] = 2
            for u in users:
                u["count"] = len(msgs)
        op.change_groups(count, msgs=op.source("msgs", key="grp"),
                         users=op.source("users", key="_id"))


def _reported(results: dict, *words: str) -> int:
    return sum(v for k, v in results.items() if any(w in k for w in words))


def _writers(mongo_url, db, tag: str, seed: int) -> AppWriters:
    return AppWriters(mongo_url, db.name, "msgs", range(N_DOCS), threads=2, max_ops=500,
                      seconds=30, deletable=range(N_DOCS - 40, N_DOCS), seed=seed, tag=tag,
                      insert={"meta": {"render": 0}, "n": -1, "grp": 0})


@pytest.mark.slow
@pytest.mark.skip_server("ferretdb", reason="FerretDB 1.24 loses about 6-8% of update_one "
                         "calls racing its own update_many, with no mongrate involved: in place "
                         "is proved on mongo-java-server (rewrite's detection on FerretDB)")
@pytest.mark.parametrize("helper", ["update_many", "change_each", "change_groups"])
def test_in_place_upgrade_and_downgrade_lose_no_acknowledged_write(mongo_db, mongo_url,
                                                                  helper):
    db = mongo_db
    _seed(db)
    with _writers(mongo_url, db, "up", 1) as up:
        with revision_op(db, "r1", write_strategy="in_place", batch_size=100,
                         defer=False) as op:
            _migrate(op, helper)
    up.stop()
    assert up.acknowledged > 100
    assert up.lost(db) == []
    inserted = set(up.inserted())
    docs = list(db.msgs.find())
    half = [d["_id"] for d in docs if (d["meta"].get("render") == 1) != (d.get("v") == 2)]
    assert half == []  # migrated whole, or untouched as the application wrote it
    unmigrated = [d["_id"] for d in docs if d.get("v") != 2 and d["_id"] not in inserted]
    assert len(unmigrated) <= _reported(reported(op), "left as", "unsure")

    with _writers(mongo_url, db, "down", 2) as down_writers:
        with revision_op(db, "r1", "downgrade", write_strategy="in_place",
                         batch_size=100) as down:
            down.restore_undo()
    down_writers.stop()
    # the upgrade's writers' writes survive, but for documents deleted since
    assert up.lost(db, ignore=down_writers.deleted()) == []
    assert down_writers.lost(db) == []
    still = [d["_id"] for d in db.msgs.find() if d.get("v") == 2 or d["meta"].get("render")]
    assert len(still) <= _reported(reported(down), "unsure")
    if helper == "change_groups":
        assert db.users.count_documents({"count": {"$exists": True}}) == 0


@pytest.mark.slow
@pytest.mark.skip_server("javaserver", reason="the probe picks in place there; rewrite is "
                         "FerretDB 1.x's strategy")
def test_rewrite_never_loses_a_write_silently(mongo_db, mongo_url):
    """On the rewrite strategy a write during the pass stops the swap: the collection is
    as the application left it, and every acknowledged write is there."""
    _seed(mongo_db)
    with _writers(mongo_url, mongo_db, "up", 3) as app_writes:
        time.sleep(0.2)
        try:
            with revision_op(mongo_db, "r1", write_strategy="rewrite", batch_size=100,
                             defer=False) as op:
                _migrate(op, "change_each")
            refused = False
        except RewriteError as exc:
            assert "stop the application's writers" in str(exc)
            refused = True
    app_writes.stop()
    assert app_writes.acknowledged > 0
    assert app_writes.lost(mongo_db) == []
    migrated = mongo_db.msgs.count_documents({"v": 2})
    assert migrated == 0 if refused else migrated >= N_DOCS - 40
