"""Folds: a revision's per-document change written by the next revision's pass over the
same collection (op.rewrite_each + ``absorbs``), through the real CLI."""

from __future__ import annotations

import pytest

from mongrate.config import Config

CFG = Config()
A, B = "aaaa1111", "bbbb2222"
# A doubles n into `a` (idempotent); B reads A's field, so it must see A's change
# (a dry run does not: nothing is written, so B reads the data as it is).
UP_A = """
op.rewrite_each("items", lambda raw: {} if raw.get("a") == raw["n"] * 2 else
                {"a": raw["n"] * 2}, "items a", result="a_changed")
"""
UP_B = """
from mongrate.ops import RAW
rw = op.rewrite("items")
if rw.start():
    for raw in rw.absorb(op.db.get_collection("items", codec_options=RAW).find()):
        rw.change(raw, {"b": raw.get("a", -9) + 1} if raw["n"] % 3 == 0 else {})
    op.results["b_changed"] = rw.finish()
"""
DOWN = 'op.restore_rewrite("items")'
ABSORBS = 'absorbs = ("items",)'


def docs(db) -> list[dict]:
    return list(db["items"].find())  # stored order: a rewrite must keep it


def results(db, rev: str) -> dict:
    entry = db[CFG.log_collection].find_one({"revision": rev, "direction": "upgrade"},
                                            sort=[("started_at", -1)])
    return entry


@pytest.fixture
def items(mongo_db):
    # every fourth document already has the value A sets: nothing to change there
    mongo_db["items"].insert_many([{"n": (i * 7) % 40, **({"a": ((i * 7) % 40) * 2}
                                   if i % 4 == 0 else {})} for i in range(40)])
    return docs(mongo_db)


def test_folded_run_equals_revisions_run_one_by_one(project, mongo_db, items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "changes folded into the next revision's pass" in r.err
    assert f"mongrate_tmp_{A}_items" not in mongo_db.list_collection_names()
    folded = docs(mongo_db)
    assert [d["a"] for d in folded] == [d["n"] * 2 for d in folded]
    assert [d.get("b") for d in folded] == [d["n"] * 2 + 1 if d["n"] % 3 == 0 else None
                                            for d in folded]
    a_log, b_log = results(mongo_db, A), results(mongo_db, B)
    assert a_log["status"] == b_log["status"] == "succeeded"
    assert a_log["results"]["a_changed"] == 30  # counted once written, by B's pass
    assert a_log["finished_at"] >= b_log["started_at"]  # A's heads moved after B's pass

    # each revision's own undo record: down one step is the state after A alone
    assert project.run("downgrade", A).code == 0
    after_a_folded = docs(mongo_db)
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items
    r = project.run("upgrade", A)  # A alone: written by its own rewrite
    assert r.code == 0 and "folded" not in r.err
    assert docs(mongo_db) == after_a_folded
    assert results(mongo_db, A)["results"]["a_changed"] == 30
    assert project.run("upgrade", "head").code == 0  # then B alone
    assert docs(mongo_db) == folded


def test_a_fold_the_next_revision_leaves_unwritten_is_written_on_its_own(project, mongo_db,
                                                                         items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up="pass", body_down="pass", module=ABSORBS)  # forgets to
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "writing aaaa1111's change on its own" in r.err
    assert [d["a"] for d in docs(mongo_db)] == [d["n"] * 2 for d in items]
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items


def test_a_failed_absorbing_revision_leaves_the_folding_one_unapplied(project, mongo_db,
                                                                      items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    broken = project.add(B, A, body_up=UP_B + "\nraise RuntimeError('b broke')",
                         body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code != 0
    assert "b broke" in r.err and f"with the folded changes of {A}" in r.err
    assert mongo_db[CFG.version_collection].count_documents({}) == 0  # neither applied
    assert results(mongo_db, A)["status"] == results(mongo_db, B)["status"] == "failed"
    broken.unlink()
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert [d["a"] for d in docs(mongo_db)] == [d["n"] * 2 for d in items]
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items


def test_resumed_fold_whose_pass_already_swapped_finds_nothing_left(project, mongo_db, items):
    """Killed after the absorbing swap, before the folding revision's record said done."""
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    assert project.run("upgrade", "head").code == 0
    final = docs(mongo_db)
    undo = mongo_db[CFG.undo_collection]
    undo.update_one({"revision": A, "kind": "rewrite"}, {"$set": {"state": "folded"}})
    mongo_db[CFG.version_collection].delete_many({})
    mongo_db[CFG.log_collection].update_many({}, {"$set": {"status": "started"}})
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "resuming" in r.err and "writing aaaa1111's change on its own" in r.err
    assert docs(mongo_db) == final
    assert results(mongo_db, A)["results"]["a_changed"] == 0
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items  # the first pass's prior values were kept


def test_a_dry_run_never_folds_and_writes_nothing(project, mongo_db, items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head", "--dry-run")
    assert r.code == 0, r.err
    assert "folded" not in r.err and "items: would rewrite 30 of 40" in r.err
    assert docs(mongo_db) == items
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0
