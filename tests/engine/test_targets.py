"""Targets, ranges and version rows through the CLI: Alembic's meaning, or one clear refusal."""

from __future__ import annotations

import pytest

UP = 'op.db["ran"].insert_one({"rev": op.revision, "dir": "up"})'
DOWN = 'op.db["ran"].insert_one({"rev": op.revision, "dir": "down"})'


def add(project, rev, down, **kw):
    project.add(rev, down, body_up=UP, body_down=DOWN, **kw)


def rows(db) -> list[str]:
    return sorted(db.mongrate_version.distinct("_id"))


def ran(db) -> list[tuple[str, str]]:
    found = [(d["rev"], d["dir"]) for d in db.ran.find().sort("_id", 1)]
    db.ran.delete_many({})
    return found


@pytest.fixture
def forked(project):
    """a001, then b002 (branch label lab1) and c003 on it."""
    add(project, "a001", None)
    add(project, "b002", "a001", labels=("lab1",))
    add(project, "c003", "a001")
    return project


def test_label_step_down_with_nothing_of_the_branch_applied_is_refused(forked, mongo_db):
    project = forked
    assert project.run("upgrade", "c003").code == 0
    ran(mongo_db)
    log_before = mongo_db.mongrate_log.count_documents({})
    r = project.run("downgrade", "lab1@-1")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "nothing of branch lab1 is applied" in r.err
    assert rows(mongo_db) == ["c003"] and ran(mongo_db) == []
    assert mongo_db.mongrate_log.count_documents({}) == log_before
    # once the branch is applied, lab1@-1 un-applies its revision and nothing else
    assert project.run("upgrade", "heads").code == 0
    ran(mongo_db)
    assert project.run("downgrade", "lab1@-1").code == 0
    assert ran(mongo_db) == [("b002", "down")] and rows(mongo_db) == ["c003"]
    r = project.run("downgrade", "lab1@-2")  # b002 is gone: nothing of lab1 left
    assert r.code == 2 and "nothing of branch lab1" in r.err


def test_label_step_down_never_leaves_the_branch(forked, mongo_db):
    project = forked
    assert project.run("upgrade", "heads").code == 0
    ran(mongo_db)
    r = project.run("downgrade", "lab1@-2")  # the second step would un-apply the trunk a001
    assert r.code == 2 and "steps below branch lab1" in r.err
    assert rows(mongo_db) == ["b002", "c003"] and ran(mongo_db) == []


def test_rev_minus_n_acts_as_naming_the_revision(project, mongo_db):
    add(project, "a001", None)
    add(project, "b002", "a001")
    add(project, "c003", "b002")
    add(project, "d004", "c003")
    add(project, "e005", "a001")
    assert project.run("upgrade", "heads").code == 0
    ran(mongo_db)
    r = project.run("downgrade", "d004-3")  # resolves to a001
    assert r.code == 0, r.err
    assert rows(mongo_db) == ["a001"]
    relative = ran(mongo_db)
    assert project.run("upgrade", "heads").code == 0
    ran(mongo_db)
    assert project.run("downgrade", "a001").code == 0
    assert relative == ran(mongo_db)
    assert {r for r, _ in relative} == {"b002", "c003", "d004", "e005"}
    assert relative.index(("d004", "down")) < relative.index(("c003", "down"))


def test_base_plus_n_walks_up_from_base(project, mongo_db):
    add(project, "a001", None)
    add(project, "b002", "a001")
    add(project, "c003", "b002")
    r = project.run("upgrade", "base+2")
    assert r.code == 0, r.err
    assert rows(mongo_db) == ["b002"] and ran(mongo_db) == [("a001", "up"), ("b002", "up")]
    r = project.run("upgrade", "base+4")
    assert r.code == 2 and "goes past the head" in r.err
    r = project.run("upgrade", "base-1")
    assert r.code == 2 and "nothing is below base" in r.err
    assert rows(mongo_db) == ["b002"]


def test_history_range_must_go_from_ancestor_to_descendant(project):
    add(project, "a001", None)
    add(project, "b002", "a001", labels=("lab1",))
    add(project, "c003", "b002")
    add(project, "d004", "a001", labels=("lab2",))
    add(project, "e005", "d004")
    r = project.run("history", "-r", "c003:b002")  # swapped
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "does not refer to ancestor and descendant revisions" in r.err
    assert "did you mean b002:c003" in r.err and r.out == ""
    r = project.run("history", "-r", "c003:e005")  # unrelated
    assert r.code == 2 and "c003 is not below e005" in r.err
    r = project.run("history", "-r", "b002:c003")
    assert r.code == 0 and [ln.split(" -> ")[1][:4] for ln in r.out.splitlines()] == [
        "c003", "b002"]
    r = project.run("history", "-r", "lab1@base:")
    assert r.code == 0, r.err
    assert [ln.split(" -> ")[1][:4] for ln in r.out.splitlines()] == ["c003", "b002"]
    r = project.run("history", "-r", "lab2@base:e005")
    assert [ln.split(" -> ")[1][:4] for ln in r.out.splitlines()] == ["e005", "d004"]


def test_depends_on_rows_are_alembics(project, mongo_db):
    add(project, "a001", None)
    add(project, "b002", None, depends_on="a001")
    r = project.run("upgrade", "b002")
    assert r.code == 0, r.err
    assert ran(mongo_db) == [("a001", "up"), ("b002", "up")]
    assert rows(mongo_db) == ["b002"]  # Alembic's row: b002 implies a001
    r = project.run("downgrade", "-1")
    assert r.code == 0, r.err
    assert ran(mongo_db) == [("b002", "down")] and rows(mongo_db) == ["a001"]
    # rows written by the earlier rule ([a001, b002]) are read, and rewritten, as [b002]
    mongo_db.mongrate_version.insert_one({"_id": "b002"})
    assert "b002" in project.run("current").out
    assert project.run("downgrade", "-1").code == 0
    assert ran(mongo_db) == [("b002", "down")] and rows(mongo_db) == ["a001"]
