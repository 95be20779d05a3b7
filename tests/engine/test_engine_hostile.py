"""A hostile review of the data engine: ways a revision author (or a SIGKILL) could make a
downgrade lie, a round trip drift, or a run see what it should not. Each test is a
regression test for a bug found that way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bson import Int64

from mongrate.testing.kit import revision_op, snapshot

#: The restore's kill points sit in FerretDB 1.x's copy-back and swap; on mongo-java-server
#: the restore never reaches them (the child exits 0 before any kill)
RESTORE_KILLS_FERRETDB = pytest.mark.skip_server(
    "javaserver", reason="the kill points sit in FerretDB 1.x's copy-back and swap, which "
                         "the restore does not take on this server")


#: Holds on the rewrite strategy only (FerretDB 1.x); the probe picks in_place on
#: mongo-java-server, so its folded passes, copies, swaps and their kill points never happen
REWRITE_ONLY = pytest.mark.skip_server(
    "javaserver", reason="checks the rewrite strategy (folded passes, copies and swaps, their "
                         "kill points); the probe picks in_place on this server")

ROOT = Path(__file__).resolve().parents[2]
BIG = 2**53  # Int64 ids from here on no longer fit a float: Twitter/Discord-style ids


def run_killed(project, prelude: str, *args: str, timeout: float = 120):
    """The real command in a child process with ``prelude`` run first (it arranges a
    SIGKILL); returns the exit code (-9 when the kill landed)."""
    code = f"{prelude}\nfrom mongrate.cli import main\nmain({['-c', str(project.ini), *args]!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=project.path,
                          timeout=timeout)
    return proc.returncode, proc.stderr


#: SIGKILL at a collection rename whose source matches ``pattern`` and that is not the
#: dropTarget attempt: on FerretDB the live collection has just been dropped.
KILL_AT_RENAME = """
import os, re, signal
from pymongo.collection import Collection
_rename = Collection.rename
def rename(self, new, **kw):
    if re.fullmatch({pattern!r}, self.name) and not kw.get("dropTarget"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _rename(self, new, **kw)
Collection.rename = rename
"""

#: SIGKILL when the first step of ``revision`` is marked done.
KILL_AT_MARK_DONE = """
import os, signal
from mongrate.operations.step import Step
_mark = Step.mark_done
def mark_done(self):
    if self.ctx.revision == {revision!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _mark(self)
Step.mark_done = mark_done
"""


# --------------------------------------------------------------- ids and sort order
@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_restore_keeps_int64_ids_that_share_a_float_apart(mongo_db, strategy):
    """Records are grouped per document by a sort key; 2**53 and 2**53 + 1 made one group,
    so one document got the other's prior values and the other stayed changed."""
    mongo_db.items.insert_many([{"_id": Int64(BIG), "v": "A"}, {"_id": Int64(BIG + 1), "v": "B"},
                                {"_id": 5, "v": "C"}])
    before = snapshot(mongo_db)
    with revision_op(mongo_db, "r1", write_strategy=strategy, defer=False) as op:
        assert op.change_each("items", lambda d: d.update(v=d["v"] + "!", extra=1)) == 3
    with revision_op(mongo_db, "r1", "downgrade", write_strategy=strategy) as op:
        assert op.restore_undo() == 3
    assert snapshot(mongo_db) == before


def test_change_groups_keeps_int64_keys_that_share_a_float_apart(mongo_db):
    mongo_db.users.insert_many([{"_id": Int64(BIG)}, {"_id": Int64(BIG + 1)}])
    mongo_db.posts.insert_many([{"_id": i, "user": Int64(BIG + i % 2)} for i in range(4)])
    seen = []
    with revision_op(mongo_db, "r1", write_strategy="rewrite", defer=False) as op:
        op.change_groups(lambda key, users, posts: seen.append((key, len(users), len(posts))),
                         users=op.source("users", key="_id"),
                         posts=op.source("posts", key="user", projection={"_id": 1}))
    assert seen == [(BIG, 1, 2), (BIG + 1, 1, 2)]


def test_subdocument_ids_sort_as_the_server_sorts_them(mongo_db):
    """The server compares an embedded document's value types before its field names;
    the client-side order disagreed, and a rewrite restore refused to run."""
    mongo_db.items.insert_many([{"_id": {"b": 1}, "v": 1}, {"_id": {"a": "x"}, "v": 2},
                                {"_id": {"a": 1, "b": 2}, "v": 3}])
    before = snapshot(mongo_db)
    with revision_op(mongo_db, "r1", write_strategy="rewrite", defer=False) as op:
        op.update_many("items", {}, {"$inc": {"v": 10}})
    with revision_op(mongo_db, "r1", "downgrade", write_strategy="rewrite") as op:
        op.restore_undo()
    assert snapshot(mongo_db) == before


def test_bson_order_key_agrees_with_the_server_sort(mongo_db):
    """Merge joins (restore, change_groups) trust this key to match the server's order."""
    import datetime as dt

    from bson import Binary, ObjectId, Timestamp
    from bson.datetime_ms import DatetimeMS

    from mongrate.mongo.codec import EXACT
    from mongrate.mongo.order import bson_order_key

    ids = [None, -1, 0.5, Int64(BIG), Int64(BIG + 1), float(BIG + 2), Int64(BIG + 3), "", "a",
           "é", {"b": 1}, {"a": "x"}, {"a": 1, "b": 2}, {"a": {"b": 1}}, {"a": [1]},
           Binary(b"ab", 0), Binary(b"b", 0), ObjectId(), False, True,
           DatetimeMS(-2**62), dt.datetime(1960, 1, 1), dt.datetime(2020, 1, 1),
           DatetimeMS(2**62), Timestamp(5, 1), Timestamp(10, 0)]
    mongo_db.items.insert_many([{"_id": i} for i in ids])
    served = [d["_id"] for d in mongo_db.get_collection("items", codec_options=EXACT)
              .find().sort("_id", 1)]
    assert sorted(served, key=bson_order_key) == served
    assert len({bson_order_key(i) for i in served}) == len(ids)



@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_a_removed_field_comes_back_in_place_beside_a_date_past_9999(mongo_db, strategy,
                                                                    mongo_server):
    """A field removed from the middle goes back by replacing the document; in place, the
    replacement was built as a RawBSONDocument that pymongo decodes to validate, and a date
    past year 9999 made the downgrade impossible (InvalidBSON)."""
    from bson.datetime_ms import DatetimeMS

    if strategy == "in_place" and mongo_server in ("javaserver", "ferretdb"):
        pytest.skip(f"{mongo_server}: in place, a field goes back in the middle only by a "
                    "replacement conditional on the whole document ($expr, MongoDB); without "
                    "$expr it goes back by $set (last), so that a field the application added "
                    "meanwhile is not replaced away")
    mongo_db.items.insert_many([{"_id": 1, "a": 1, "mid": "x", "far": DatetimeMS(2**62)},
                                {"_id": 2, "mid": {"when": DatetimeMS(-2**62)}, "z": 0}])
    before = snapshot(mongo_db)
    with revision_op(mongo_db, "r1", write_strategy=strategy, defer=False) as op:
        op.update_many("items", {}, {"$unset": {"mid": ""}})
    with revision_op(mongo_db, "r1", "downgrade", write_strategy=strategy) as op:
        op.restore_undo()
    assert snapshot(mongo_db) == before

# ------------------------------------------------------------------ kills and resumes
CHANGE = 'op.change_each({coll!r}, lambda d: d.update(n=d["n"] * 10 + 1, new=True))'
INC = 'op.update_many({coll!r}, {{}}, {{"$inc": {{"n": 1000}}}})'


#: A change_each that fails at the document whose n is {n}.
FAILING_CHANGE = """
def change(doc):
    if doc["n"] == {n}:
        raise ValueError("bad {n}")
    doc["x"] = 1
op.change_each("items", change)
"""


def numbers(db, coll="items"):
    return sorted(d["n"] for d in db[coll].find())


@pytest.mark.parametrize("coll", ["items", "a.b"])
@REWRITE_ONLY
def test_a_kill_mid_swap_resumes_without_losing_the_collection(project, mongo_db, coll):
    """FerretDB has no rename with dropTarget: the live collection is dropped, then the
    rewritten copy renamed in (or, for a name with a dot, copied back). Killed in between,
    the resumed run re-deferred the step, which overwrote its "built" state, and then
    dropped the only copy: the collection was gone and the step marked done."""
    mongo_db[coll].insert_many([{"_id": i, "n": i} for i in range(30)])
    project.add("aaaa1111", None, body_up=CHANGE.format(coll=coll))
    before = snapshot(mongo_db)
    code, err = run_killed(project, KILL_AT_RENAME.format(
        pattern=f"mongrate_tmp_aaaa1111_1_{coll}".replace(".", r"\.")), "upgrade", "head")
    assert code == -9, err
    assert coll not in mongo_db.list_collection_names()  # the kill landed after the drop
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert numbers(mongo_db, coll) == [10 * i + 1 for i in range(30)]
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before


@REWRITE_ONLY
def test_a_kill_after_a_swap_does_not_apply_the_change_twice(project, mongo_db):
    """Killed after the swap, before the step was marked done: the resumed run must see the
    swap happened ($inc is not idempotent), and so must a folded pass's earlier step."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(30)])
    project.add("aaaa1111", None, body_up=INC.format(coll="items"))
    project.add("bbbb2222", "aaaa1111", body_up=CHANGE.format(coll="items"))
    before = snapshot(mongo_db)
    for rev in ("aaaa1111", "bbbb2222"):  # the folded pass marks aaaa1111's step first
        code, err = run_killed(project, KILL_AT_MARK_DONE.format(revision=rev), "upgrade", "head")
        assert code == -9, err
        r = project.run("upgrade", "head")
        assert r.code == 0, r.err
        assert numbers(mongo_db) == [(i + 1000) * 10 + 1 for i in range(30)]
        assert re.search(r"^ +items updated: +30$", r.out, re.M) and re.search(r"^ +items changed: +30$", r.out, re.M)
        assert project.run("downgrade", "base").code == 0
        assert snapshot(mongo_db) == before


@REWRITE_ONLY
def test_a_failed_resume_after_a_kill_mid_swap_is_reverted_exactly(project, mongo_db):
    """Killed mid-swap, then the resumed run fails before reaching that pass: the
    downgrade reverting it must finish the swap before it decides which records describe
    real writes (it skipped them as never swapped, and the change stayed)."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(30)])
    project.add("aaaa1111", None, body_up="""
        if op.db.flags.find_one({"fail": True}):
            raise RuntimeError("transient failure")
        """ + CHANGE.format(coll="items"))
    before = snapshot(mongo_db)
    code, err = run_killed(project, KILL_AT_RENAME.format(pattern="mongrate_tmp_aaaa1111_1_items"),
                           "upgrade", "head")
    assert code == -9, err
    mongo_db.flags.insert_one({"fail": True})
    r = project.run("upgrade", "head")
    assert r.code == 1 and "transient failure" in r.err
    mongo_db.flags.drop()
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp")] == []



#: SIGKILL after the ``n``-th bulk_write or insert_many into the collection ``coll``.
KILL_AT_WRITE = """
import os, signal
from pymongo.collection import Collection
_bulk, _insert, _seen = Collection.bulk_write, Collection.insert_many, [0]
def seen(self):
    if self.name == {coll!r}:
        _seen[0] += 1
        if _seen[0] >= {n}:
            os.kill(os.getpid(), signal.SIGKILL)
def bulk_write(self, *a, **kw):
    result = _bulk(self, *a, **kw)
    seen(self)
    return result
def insert_many(self, *a, **kw):
    result = _insert(self, *a, **kw)
    seen(self)
    return result
Collection.bulk_write, Collection.insert_many = bulk_write, insert_many
"""


@pytest.mark.parametrize(("first", "then", "written"), [
    ("in_place", "rewrite", "items"), ("rewrite", "in_place", "mongrate_tmp_aaaa1111_1_items")])
def test_a_run_killed_on_one_strategy_resumes_on_the_other(project, mongo_db, first, then,
                                                           written):
    """The strategy is chosen per run (the config, or the probe). An in-place pass cut
    short was rolled back only by another in-place run: resumed by a rewrite, the documents
    it had written got the change twice. A rewrite's copy was left behind by an in-place
    resume."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(100)])
    project.write_ini(write_strategy=first, batch_size="10")
    project.add("aaaa1111", None,
                body_up='op.change_each("items", lambda d: d.update(n=d["n"] + 1000))')
    before = snapshot(mongo_db)
    code, err = run_killed(project, KILL_AT_WRITE.format(coll=written, n=3), "upgrade", "head")
    assert code == -9, err
    project.write_ini(write_strategy=then, batch_size="10")
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert numbers(mongo_db) == [i + 1000 for i in range(100)]
    assert "mongrate_tmp" not in project.run("check").err
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before


RESTORE_KILLS = {  # (strategy, collection, prelude): inside a downgrade's restore
    "rewrite-build": ("rewrite", "items", KILL_AT_WRITE.format(
        coll="mongrate_tmp_aaaa1111_restore_items", n=2)),
    "rewrite-swap": ("rewrite", "items", KILL_AT_RENAME.format(
        pattern="mongrate_tmp_aaaa1111_restore_items")),
    "rewrite-copy-back": ("rewrite", "a.b", KILL_AT_WRITE.format(coll="a.b", n=2)),
    "in-place": ("in_place", "items", KILL_AT_WRITE.format(coll="items", n=2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(RESTORE_KILLS))
@RESTORE_KILLS_FERRETDB
def test_a_downgrade_killed_inside_its_restore_resumes_exactly(project, mongo_db, point):
    strategy, coll, prelude = RESTORE_KILLS[point]
    mongo_db[coll].insert_many([{"_id": i, "n": i} for i in range(100)])
    project.write_ini(write_strategy=strategy, batch_size="10")
    project.add("aaaa1111", None, body_up=CHANGE.format(coll=coll))
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 0
    code, err = run_killed(project, prelude, "downgrade", "base")
    assert code == -9, err
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names()
            if n.startswith(("mongrate_tmp", "mongrate_undo_"))] == []

# --------------------------------------------------------------- downgrades' own helpers
@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_a_downgrade_helper_is_not_skipped_as_the_upgrade_s_pass(project, mongo_db, strategy):
    """Pass states were keyed by revision, collection and call number only: a downgrade's
    first helper call found the upgrade's first call "done" and wrote nothing."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(10)])
    project.write_ini(write_strategy=strategy)
    project.add("aaaa1111", None, body_up="""
        op.db.items.update_many({}, {"$set": {"flag": 1}})  # not recorded: undone by hand
        op.update_many("items", {}, {"$set": {"plan": "free"}})
    """, body_down="""
        op.report(unset=op.update_many("items", {}, {"$unset": {"flag": ""}}))
        op.restore_undo()
    """)
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 0
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert re.search(r"^ +unset: +10$", r.out, re.M)
    assert snapshot(mongo_db) == before


@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_a_downgrade_s_own_writes_are_not_undone_after_it(project, mongo_db, strategy):
    """In place, op.update_many recorded prior values in a downgrade too, and the engine's
    restore after the downgrade put them back: the downgrade's own change was reverted."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(10)])
    project.write_ini(write_strategy=strategy)
    project.add("aaaa1111", None, body_up='op.db.items.update_many({}, {"$set": {"flag": True}})',
                body_down='op.update_many("items", {"flag": True}, {"$unset": {"flag": ""}})')
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 0
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_undo_")] == []


# ------------------------------------------------------------------------ leftovers
def test_reverting_a_failed_rewrite_pass_drops_its_scratch_copy(project, mongo_db):
    """The copy a failed pass had built was left behind by the revert, and check then
    reported it for good."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(100)])
    project.write_ini(write_strategy="rewrite", batch_size="10")
    project.add("aaaa1111", None, body_up=FAILING_CHANGE.format(n=99))
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 1
    assert "mongrate_tmp_aaaa1111_1_items" in mongo_db.list_collection_names()
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before
    assert "mongrate_tmp" not in project.run("check").err
    assert [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp")] == []


# --------------------------------------------------------------------------- deferral
@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_a_collection_taken_from_op_db_early_sees_later_changes(project, mongo_db, strategy):
    """Only taking a collection from op.db wrote the changes waiting for it: one taken at
    the top of upgrade() read the data without a later op.update_many (rewrite strategy),
    and its own write was then overwritten by that waiting change."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(10)])
    project.write_ini(write_strategy=strategy)
    project.add("aaaa1111", None, body_up="""
        items = op.db.items
        fs_files = op.db.fs.files.with_options()
        op.update_many("items", {}, {"$set": {"x": 1}})
        op.update_many("fs.files", {}, {"$set": {"x": 1}})
        op.report(seen=items.count_documents({"x": 1}))
        op.report(files=fs_files.count_documents({"x": 1}))
        items.update_many({}, {"$set": {"x": 2}})
    """)
    mongo_db["fs.files"].insert_many([{"_id": i} for i in range(3)])
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert re.search(r"^ +seen: +10$", r.out, re.M) and re.search(r"^ +files: +3$", r.out, re.M)
    assert mongo_db.items.count_documents({"x": 2}) == 10


def test_change_groups_settles_key_changes_waiting_for_two_sources(project, mongo_db):
    """A change waiting for a source that alters its grouping key is written first, and
    change_groups starts over: it gave up after one such source ('could not settle
    waiting changes'), though the same revisions pass when run one at a time."""
    mongo_db.users.insert_many([{"_id": i, "email": f"U{i}@X"} for i in range(5)])
    mongo_db.orders.insert_many([{"_id": i, "email": f"U{i % 5}@X"} for i in range(15)])
    project.add("aaaa1111", None, body_up="""
        op.change_each("users", lambda d: d.update(email=d["email"].lower()))
        op.change_each("orders", lambda d: d.update(email=d["email"].lower()))
    """)
    project.add("bbbb2222", "aaaa1111", body_up="""
        def count(email, users, orders):
            for u in users:
                u["orders"] = len(orders)
        op.change_groups(count, users=op.source("users", key="email"),
                         orders=op.source("orders", key="email"))
    """)
    before = snapshot(mongo_db)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert [u["orders"] for u in mongo_db.users.find()] == [3] * 5
    assert project.run("downgrade", "aaaa1111").code == 0
    assert mongo_db.users.count_documents({"orders": {"$exists": True}}) == 0
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before


@REWRITE_ONLY
def test_a_failing_deferred_change_is_blamed_and_nothing_is_applied(project, mongo_db):
    """A change waits for the end of the next revision; when it fails there, its revision
    is named, neither revision is applied, and the message does not claim that nothing
    ran after it (the next revision did: its index is reverted by the downgrade)."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(20)])
    mongo_db.other.insert_one({"_id": 1})
    project.add("aaaa1111", None, body_up=FAILING_CHANGE.format(n=7))
    project.add("bbbb2222", "aaaa1111", body_up='op.create_index("other", [("k", 1)], name="k")')
    before = snapshot(mongo_db)
    r = project.run("upgrade", "head")
    assert r.code == 1
    assert "upgrade of aaaa1111 (revision aaaa1111) failed: ValueError: bad 7" in r.err
    assert "bbbb2222 ran after it and was not applied" in r.err
    assert mongo_db.mongrate_version.distinct("_id") == []
    log = {e["revision"]: e for e in mongo_db.mongrate_log.find()}
    assert log["aaaa1111"]["status"] == log["bbbb2222"]["status"] == "failed"
    assert "ran after aaaa1111" in log["bbbb2222"]["error"]
    assert "k" in mongo_db.other.index_information()
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before


@REWRITE_ONLY
def test_a_count_used_while_its_pass_runs_is_an_error_not_zero(project, mongo_db):
    """A deferred helper's count is resolved by writing its change; inside the function of
    the change_groups pass that is writing it, it read 0."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(20)])
    project.add("aaaa1111", None, body_up="""
        n = op.change_each("items", lambda d: d.update(x=1))
        def group(key, items):
            op.report(inside=int(n))
        op.change_groups(group, items=op.source("items", key="n"))
    """)
    r = project.run("upgrade", "head")
    assert r.code == 1 and "count was used while the pass writing its change" in r.err
    project.add("aaaa1111", None, body_up="""
        n = op.change_each("items", lambda d: d.update(x=1))
        op.change_groups(lambda key, items: None, items=op.source("items", key="n"))
        op.report(after=int(n))
    """)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert re.search(r"^ +after: +20$", r.out, re.M)


def test_change_functions_that_return_something_else_get_one_clear_line(mongo_db):
    """``lambda d: d.pop("legacy", None)`` returns the popped value: it failed with
    'TypeError: encoder expected a mapping type but got: 0', naming neither the collection
    nor the mistake; a value BSON cannot hold named no document."""
    from mongrate.errors import OpError

    mongo_db.items.insert_many([{"_id": i, "legacy": i} for i in range(3)])
    before = snapshot(mongo_db)
    for fn, message in ((lambda d: d.pop("legacy", None), "items: the change function "
                         "returned 0, not a document: edit the document it is given"),
                        (lambda d: d.update(tags={"a"}), r"items: document 0: .*cannot encode")):
        with pytest.raises(OpError, match=message), \
                revision_op(mongo_db, "r1", write_strategy="rewrite", defer=False) as op:
            op.change_each("items", fn)
    assert snapshot(mongo_db) == before


def test_the_kit_runs_a_downgrade_as_the_command_does(mongo_db, tmp_path):
    """The command restores what a downgrade left recorded; the kit's run_revision did not,
    so an author's test and the real downgrade disagreed."""
    from mongrate.testing.kit import run_revision

    path = tmp_path / "aaaa1111_r.py"
    path.write_text('revision = "aaaa1111"\n\n\ndef upgrade(op):\n'
                    '    op.update_many("items", {}, {"$set": {"x": 1}})\n\n\n'
                    'def downgrade(op):\n    pass\n')
    mongo_db.items.insert_many([{"_id": i} for i in range(3)])
    before = snapshot(mongo_db)
    run_revision(mongo_db, path)
    run_revision(mongo_db, path, "downgrade")
    assert snapshot(mongo_db) == before


FOLDED_REVS = [
    ("aaaa1111", 'op.update_many("items", {"k": {"$gte": 5}}, {"$inc": {"n": 1}})'),
    ("bbbb2222", 'op.change_each("items", lambda d: d.update(n=d["n"] * 2))'),
    ("cccc3333", """
        def total(grp, users, items):
            for u in users:
                u["total"] = sum(i["n"] for i in items)
            for r, i in enumerate(items):
                i["rank"] = r
        op.change_groups(total, users=op.source("users", key="_id"),
                         items=op.source("items", key="grp", order="n"))
    """),
    ("dddd4444", """
        op.update_many("items", {}, {"$set": {"done": True}, "$unset": {"k": ""}})
        op.change_each("users", lambda d: d.update(total=d.get("total", 0) + 1))
        op.report(seen=op.db.items.count_documents({"done": True}))
        op.update_many("users", {"total": {"$gt": 20}}, {"$set": {"big": True}})
    """),
]


def seed_items_and_users(db):
    db.items.insert_many([{"_id": i, "k": i % 10, "n": i, "grp": i % 4, "k2": "x"} for i in range(40)])
    db.users.insert_many([{"_id": g, "name": f"u{g}"} for g in range(5)])


def test_folded_filtered_and_grouped_changes_equal_one_revision_at_a_time(project, mongo_db):
    """Deferral end to end: a filtered change folded with the next revision's, a
    change_groups that must write them first, op.db reading a waiting change. Upgrading to
    head in one run, then downgrading one revision at a time, passes through exactly the
    states that upgrading one revision at a time (nothing folded) goes through."""
    seed_items_and_users(mongo_db)
    project.write_ini(write_strategy="rewrite", batch_size="7")
    down = None
    for rev, body in FOLDED_REVS:
        project.add(rev, down, body_up=body)
        down = rev
    # one at a time, in place: the reference
    snaps = [snapshot(mongo_db)]
    for rev, _ in FOLDED_REVS:
        assert project.run("upgrade", rev).code == 0
        snaps.append(snapshot(mongo_db))
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == snaps[0]
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "items: one pass writes the changes of aaaa1111:1, bbbb2222:1" in r.err
    assert re.search(r"^ +seen: +40$", r.out, re.M)
    assert snapshot(mongo_db) == snaps[-1]
    for k in range(len(FOLDED_REVS) - 1, -1, -1):
        target = FOLDED_REVS[k - 1][0] if k else "base"
        assert project.run("downgrade", target).code == 0
        assert snapshot(mongo_db) == snaps[k], target


# --------------------------------------------------------------------------- dry runs
def everything(db) -> dict:
    """Every collection, mongrate's own included: raw documents and index names."""
    from mongrate.mongo.codec import RAW

    return {name: (sorted(bytes(d.raw) for d in db.get_collection(name, codec_options=RAW).find()),
                   sorted(db[name].index_information()))
            for name in sorted(db.list_collection_names())}


@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_dry_runs_write_nothing_anywhere(project, mongo_db, strategy):
    """Every helper in a dry upgrade, and a dry downgrade that would revert a failed
    upgrade and restore an applied one: not one byte changes, mongrate's own collections
    included (and no collection is created by listing the indexes of a missing one)."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(10)])
    mongo_db["dotted.name"].insert_many([{"_id": i} for i in range(3)])
    mongo_db.items.create_index([("m", 1)], name="old_idx")
    project.write_ini(write_strategy=strategy)
    project.add("aaaa1111", None, body_up="""
        op.update_many("items", {"n": {"$lt": 5}}, {"$set": {"x": 1}})
        op.change_each("items", lambda d: d.update(y=2))
        def tally(key, items, others):
            for i in items:
                i["z"] = len(others)
        op.change_groups(tally, items=op.source("items", key="n"),
                         others=op.source("others", key="n"))
        op.create_index("items", [("n", 1)], name="by_n")
        op.create_index("newcoll", [("n", 1)], name="by_n")
        op.drop_index("ghost", "nope")
        op.drop_index("items", "old_idx")
        op.backup_collection("items", "dotted.name")
    """)
    project.add("bbbb2222", "aaaa1111",
                body_up='op.change_each("items", lambda d: 1 / 0 if d["n"] == 7 else None)')
    before = everything(mongo_db)
    assert project.run("upgrade", "aaaa1111", "--dry-run").code == 0
    assert everything(mongo_db) == before
    assert project.run("upgrade", "aaaa1111").code == 0
    assert project.run("upgrade", "head").code == 1  # a partial upgrade to revert
    before = everything(mongo_db)
    r = project.run("downgrade", "base", "--dry-run")
    assert r.code == 0, r.err
    assert "would revert the partial upgrade of bbbb2222" in r.err
    assert everything(mongo_db) == before


def test_a_rewrite_that_lost_its_lock_never_swaps(project, mongo_db):
    """The in-place case is tested in test_authoring; a rewrite must not swap its copy in
    (nor write another batch of it) once the lease is gone, and a later run finishes it."""
    mongo_db.items.insert_many([{"_id": i, "n": i} for i in range(200)])
    project.write_ini(write_strategy="rewrite", batch_size="10", lock_lease_seconds="1")
    project.add("aaaa1111", None, body_up="""
        def slow(doc):
            if doc["_id"] == 150 and not op.db.flags.find_one():
                op.db.flags.insert_one({"_id": 1})
                op.db.client[op.db.name]["mongrate_lock"].insert_one(
                    {"_id": "mongrate:999999999999", "owner": "other", "host": "h", "pid": 1,
                     "command": "takeover", "expires_at": __import__("datetime").datetime.now()
                     + __import__("datetime").timedelta(seconds=2), "released": False,
                     "acquired_at": __import__("datetime").datetime.now()})
                time.sleep(1.5)  # the heartbeat sees the later lease
            doc["n"] = -1
        op.change_each("items", slow)
    """)
    before = snapshot(mongo_db)
    r = project.run("upgrade", "head")
    assert r.code == 3 and "lost the lock" in r.err
    assert {k: v for k, v in snapshot(mongo_db).items() if k != "flags"} == before
    built = mongo_db["mongrate_tmp_aaaa1111_1_items"].count_documents({})
    assert built <= 170  # no batch written after the loss but those already handed over
    mongo_db.mongrate_lock.delete_many({"owner": "other"})
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert mongo_db.items.count_documents({"n": -1}) == 200


@REWRITE_ONLY
def test_a_pass_scanned_again_in_id_order_keeps_no_record_of_the_first_scan(project, mongo_db,
                                                                           monkeypatch):
    """A filtered change folded with a later one: when the filter's matches come in another
    order than the scan (MongoDB may answer the filter from an index), the pass starts
    over sorted by _id. Records the first scan had written stood ('the first record
    stands'), though computed without the filtered change: downgrading the later revision
    alone then wiped the earlier revision's change."""
    from mongrate.operations import rewrite

    real = rewrite.FilterMatch.__init__

    def index_order(self, db, collection, filter, batch_size, *, sorted_by_id=False):
        real(self, db, collection, filter, batch_size, sorted_by_id=sorted_by_id)
        if not sorted_by_id:  # as if answered from an index on k: reversed _id order
            ids = db[collection].find(filter, {"_id": 1}).sort("k", 1)
            self._ids = (rewrite.id_key(d["_id"]) for d in ids)
            self._window, self._in_window = [], set()
            self._refill()

    monkeypatch.setattr(rewrite.FilterMatch, "__init__", index_order)
    mongo_db.items.insert_many([{"_id": i, "k": 29 - i} for i in range(30)])
    project.write_ini(batch_size="3")
    project.add("aaaa1111", None,
                body_up='op.update_many("items", {"k": {"$gte": 10}}, {"$set": {"v": "A"}})')
    project.add("bbbb2222", "aaaa1111",
                body_up='op.change_each("items", lambda d: d.update(v=d.get("v", "") + "B"))')
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "scanning again sorted by _id" in r.err
    assert mongo_db.items.count_documents({"v": "AB"}) == 20
    after_a = [{"_id": i, "k": 29 - i, **({"v": "A"} if i < 20 else {})} for i in range(30)]
    assert project.run("downgrade", "aaaa1111").code == 0
    assert list(mongo_db.items.find().sort("_id", 1)) == after_a


# ---------------------------------------------------------------------------- indexes
def test_an_index_redefined_under_its_name_comes_back_as_it_was(mongo_db):
    """Dropping an index and creating one of the same name on other keys is how a
    revision changes an index. The creation went unrecorded (a record of either kind for
    that name counted), so the downgrade kept the new keys; and records written within
    one millisecond were restored in no particular order."""
    mongo_db.items.insert_many([{"_id": i, "a": i, "b": -i, "c": i} for i in range(5)])
    mongo_db.items.create_index([("a", 1)], name="x")
    mongo_db.items.create_index([("b", 1)], name="y", unique=True)
    before = snapshot(mongo_db)
    with revision_op(mongo_db, "r1", write_strategy="rewrite") as op:
        op.drop_index("items", "x")
        op.create_index("items", [("c", 1)], name="x")
        op.drop_index("items", "y")
        op.create_index("items", [("a", 1), ("b", 1)], name="y")
    assert mongo_db.items.index_information()["x"]["key"] == [("c", 1)]
    with revision_op(mongo_db, "r1", "downgrade", write_strategy="rewrite") as op:
        op.restore_undo()
    assert snapshot(mongo_db) == before


# ------------------------------------------------------------------- side collections
def test_revision_ids_with_underscores_keep_their_records_apart(project, mongo_db):
    """Revision ids may contain '_'. Revision 'add' changing 'tags_x' and revision
    'add_tags' changing 'x' record into the same side collection: the second one's records
    are dropped as duplicates, the first downgrade restores both revisions' records into
    one collection and drops them all, and the next downgrade reports success with its
    changes still in place."""
    mongo_db.tags_x.insert_many([{"_id": i, "v": "t"} for i in range(3)])
    mongo_db.x.insert_many([{"_id": i, "v": "x"} for i in range(3)])
    project.add("add", None, body_up='op.update_many("tags_x", {}, {"$set": {"v": "T"}})')
    project.add("add_tags", "add", body_up='op.update_many("x", {}, {"$set": {"v": "X"}})')
    before = snapshot(mongo_db)
    assert project.run("upgrade", "head").code == 0
    assert project.run("downgrade", "base").code == 0
    assert snapshot(mongo_db) == before
