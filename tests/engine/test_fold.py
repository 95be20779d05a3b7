"""Folds: a revision's per-document change written by the next revision's pass over the
same collection (op.rewrite_each + ``absorbs``), through the real CLI."""

from __future__ import annotations

import pytest

from mongrate.config import Config

CFG = Config()
A, B = "aaaa1111", "bbbb2222"
# A doubles n into `a` (idempotent); B adds 1 to that same field, so it must see A's
# change, and each revision's undo record must hold its own prior value
# (a dry run does not: nothing is written, so B reads the data as it is).
UP_A = """
op.rewrite_each("items", lambda raw: {} if raw.get("a") == raw["n"] * 2 else
                {"a": raw["n"] * 2}, "items a", result="a_changed")
"""
UP_B = """
from mongrate.mongo.codec import RAW
rw = op.rewrite("items")
if rw.start():
    for raw in rw.absorb(op.db.get_collection("items", codec_options=RAW).find()):
        rw.change(raw, {"a": raw.get("a", -9) + 1, "b": True} if raw["n"] % 3 == 0 else {})
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
    assert [(d["a"], d.get("b")) for d in folded] == [
        (d["n"] * 2 + 1, True) if d["n"] % 3 == 0 else (d["n"] * 2, None) for d in folded]
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


def applied_alone(mongo_db, items) -> None:
    """A's change, written on its own; A applied, B failed."""
    assert [d["a"] for d in docs(mongo_db)] == [d["n"] * 2 for d in items]
    assert not [d for d in docs(mongo_db) if "b" in d]
    assert mongo_db[CFG.version_collection].distinct("_id") == [A]
    assert results(mongo_db, A)["status"] == "succeeded"
    assert results(mongo_db, A)["results"]["a_changed"] == 30
    assert results(mongo_db, B)["status"] == "failed"


@pytest.mark.parametrize(("body", "says"), [
    pytest.param(UP_B.replace("    op.results", "    raise RuntimeError('b broke')\n    op.results"),
                 "b broke", id="raises-before-its-swap"),
    pytest.param("pass", "did not write the change of aaaa1111", id="never-rewrites"),
    pytest.param(UP_B.replace("rw.absorb(", "("), "without passing through absorb()",
                 id="rewrites-without-absorb"),
])
def test_when_the_absorbing_revision_fails_the_folding_one_is_written_alone(
        project, mongo_db, items, body, says):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    broken = project.add(B, A, body_up=body, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code == 1, r.err
    assert f"upgrade of {B}" in r.err and says in r.err
    assert "writing aaaa1111's change on its own" in r.err
    applied_alone(mongo_db, items)
    broken.unlink()
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")  # B alone now
    assert r.code == 0, r.err
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items


def test_a_chain_of_folds_is_written_by_the_last_pass(project, mongo_db, items):
    C = "cccc3333"
    up_b_folding = """
op.rewrite_each("items", lambda raw: {} if raw.get("c") == raw["a"] + 1 else
                {"c": raw["a"] + 1}, "items c", result="c_changed")
"""
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=up_b_folding, body_down=DOWN, module=ABSORBS)
    project.add(C, B, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert r.err.count("changes folded into the next revision's pass") == 2
    assert not [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp")]
    chained = docs(mongo_db)
    assert [d["c"] for d in chained] == [d["n"] * 2 + 1 for d in chained]
    assert results(mongo_db, A)["results"]["a_changed"] == 30
    assert results(mongo_db, B)["results"]["c_changed"] == 40
    states = []
    for target in (B, A, "base"):  # one revision at a time, each exactly
        assert project.run("downgrade", target).code == 0
        states.append(docs(mongo_db))
    assert states[-1] == items
    assert project.run("upgrade", A).code == 0
    assert docs(mongo_db) == states[1]
    assert project.run("upgrade", B).code == 0
    assert docs(mongo_db) == states[0]
    assert project.run("upgrade", C).code == 0
    assert docs(mongo_db) == chained


def test_a_dry_run_never_folds_and_writes_nothing(project, mongo_db, items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head", "--dry-run")
    assert r.code == 0, r.err
    assert "folded" not in r.err and "items: would rewrite 30 of 40" in r.err
    assert docs(mongo_db) == items
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0


def heads(db) -> list[str]:
    return sorted(db[CFG.version_collection].distinct("_id"))


def interrupted_then_finished(project, mongo_db, items) -> None:
    """The folding revision was left "started": a downgrade is refused until an upgrade
    finishes it, and then the way back is exact."""
    assert heads(mongo_db) == [] and results(mongo_db, A)["status"] == "started"
    r = project.run("downgrade", "base")
    assert r.code != 0 and "was interrupted" in r.err, r.err
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)  # fixed
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "resuming" in r.err
    assert [(d["a"], d.get("b")) for d in docs(mongo_db)] == [
        (d["n"] * 2 + 1, True) if d["n"] % 3 == 0 else (d["n"] * 2, None) for d in items]
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items


def test_ctrl_c_in_the_absorbing_revision_leaves_both_to_the_next_run(project, mongo_db, items):
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B.replace("    op.results", "    raise KeyboardInterrupt\n"
                                           "    op.results"), body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code != 0
    interrupted_then_finished(project, mongo_db, items)


def test_a_swap_that_fails_keeps_the_folded_change_in_its_built_copy(project, mongo_db, items):
    broken_swap = UP_B.replace("    op.results", "    def boom():\n"
                               "        raise RuntimeError('swap broke')\n"
                               "    rw._swap = boom\n    op.results")
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=broken_swap, body_down=DOWN, module=ABSORBS)
    r = project.run("upgrade", "head")
    assert r.code == 1 and "swap broke" in r.err
    assert "its change waits in the copy the failed step built" in r.err
    assert [d.get("a") for d in docs(mongo_db)] == [d.get("a") for d in items]  # live untouched
    interrupted_then_finished(project, mongo_db, items)


def test_a_copy_built_for_an_earlier_fold_is_never_swapped_in(project, mongo_db, items):
    """A copy left "built" whose fold token no longer matches is rebuilt, not swapped."""
    project.add(A, None, body_up=UP_A, body_down=DOWN)
    project.add(B, A, body_up=UP_B, body_down=DOWN, module=ABSORBS)
    assert project.run("upgrade", "head").code == 0
    final = docs(mongo_db)
    assert project.run("downgrade", "base").code == 0
    # as if B had built a copy from other data for a fold with another token
    tmp = mongo_db[f"mongrate_tmp_{B}_items"]
    tmp.insert_many([{**d, "a": -1} for d in items])
    mongo_db[CFG.undo_collection].insert_one(
        {"revision": B, "collection": "items", "kind": "rewrite", "doc_id": "rewrite:upgrade",
         "state": "built", "folds": {A: "an-earlier-token"}})
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "finishing an interrupted swap" not in r.err
    assert docs(mongo_db) == final
    assert project.run("downgrade", "base").code == 0
    assert docs(mongo_db) == items
