"""Every write of a run survives a kill (mongrate.testing.killpoints).

The sequence runs once uninterrupted, listing every write each command sends; then each
write in turn is a kill point: the database goes back to how it was before the command,
the command runs in a child that is SIGKILLed at that write, and it runs again to
completion. What it leaves must equal the uninterrupted run byte for byte.

The default tests kill just after each write (and just before the first): every database
a kill can leave, since a command's writes go out one at a time. The slow ones kill just
before each later write: the same databases, but a process that died elsewhere in its code.
"""

from __future__ import annotations

import time

import pytest

from mongrate.testing.killpoints import KillPoints

STRATEGIES = ["rewrite", "in_place"]
COLLECTIONS = ["items", "fs.files"]  # FerretDB cannot rename a name with a dot: copy-back

#: update_many (filtered: its matches are merged with the scan), change_each and
#: change_groups; on rewrite the three are folded into one pass
UPGRADE_A = """
op.update_many({coll!r}, {{"n": {{"$gte": 3}}}}, {{"$inc": {{"n": 100}}, "$set": {{"seen": True}}}})
op.change_each({coll!r}, lambda d: d.update(double=d["n"] * 2))
def owner(g, docs, users):
    for d in docs:
        d["owner"] = users[0]["name"] if users else None
        d.pop("tags", None)
op.change_groups(owner, docs=op.source({coll!r}, key="g"),
                 users=op.source("users", key="_id", projection={{"name": 1}}))
"""

#: fails part way: in the second batch of its second helper
UPGRADE_B_FAILS = """
op.update_many({coll!r}, {{}}, {{"$set": {{"z": 1}}}})
def change(d):
    if d["n"] == 112:
        raise ValueError("document 12 cannot be changed")
    d["y"] = d["n"]
op.change_each({coll!r}, change)
"""

#: up, a revision failing part way, and what an operator then runs to take it all back
COMMANDS = [["upgrade", "aaaa1111"], ["upgrade", "head"], ["downgrade", "base"]]
EXIT_CODES = [0, 1, 0]


def seed(db, coll: str) -> None:
    """14 documents: two batches of 8."""
    db[coll].insert_many([{"_id": i, "n": i, "g": i % 4, "tags": ["t"] * (i % 3)}
                          for i in range(14)])
    db[coll].create_index([("g", 1)], name="by_g")
    db.users.insert_many([{"_id": g, "name": f"user {g}"} for g in range(3)])


@pytest.fixture
def kill_points(project, mongo_db, request):
    strategy, coll = request.param
    project.write_ini(write_strategy=strategy, batch_size="8")
    project.add("aaaa1111", None, body_up=UPGRADE_A.format(coll=coll))
    project.add("bbbb2222", "aaaa1111", body_up=UPGRADE_B_FAILS.format(coll=coll))
    seed(mongo_db, coll)
    with KillPoints(project.path, project.ini, mongo_db) as kp:
        yield kp


def run_points(kp: KillPoints, *, after: bool) -> None:
    clean = kp.record(COMMANDS)
    assert [o.code for o in clean.outcomes] == EXIT_CODES, [o.err for o in clean.outcomes]
    every = kp.points(clean)
    if after:  # every database a kill can leave: before the first write, after each
        points = [p for p in every if p.kill.when == "after" or p.write.n == 1]
    else:  # the rest: just before each later write
        points = [p for p in every if p.kill.when == "before" and p.write.n > 1]
    started = time.monotonic()
    bad = {}
    for point in points:
        problems = kp.try_point(clean, point)
        if problems:
            bad[str(point)] = problems
    took = time.monotonic() - started
    writes = [len(o.writes) for o in clean.outcomes]
    print(f"\nwrites per command {writes}, {len(points)} kill points, {len(bad)} bad, "
          f"{took:.1f}s")
    assert not bad, "\n".join(f"{p}: {'; '.join(v)}" for p, v in list(bad.items())[:15])


PARAMS = [pytest.param((s, c), id=f"{s}-{c}") for s in STRATEGIES for c in COLLECTIONS]


@pytest.mark.parametrize("kill_points", PARAMS, indirect=True)
def test_every_write_survives_a_kill_after_it(kill_points):
    run_points(kill_points, after=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_points", PARAMS, indirect=True)
def test_every_write_survives_a_kill_before_it(kill_points):
    run_points(kill_points, after=False)
