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

from mongrate.testing.killpoints import KillAt, KillPoints, mongrate_state, write_target

#: the copy-back exists because FerretDB 1.x cannot rename a name with a dot;
#: mongo-java-server renames it, so there is no copy-back to kill
COPY_BACK_ONLY = pytest.mark.skip_server(
    "javaserver", reason="mongo-java-server renames dotted names: no copy-back to kill")

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


def run_points(kp: KillPoints, *, after: bool, known_gap: bool = False) -> None:
    """Try every kill point of one half; ``known_gap``: the strict xfail of
    :data:`NO_EXPR_ORDER`, where the first bad point already decides the outcome (the
    order-blind sweep in test_a_resumed_in_place_run_differs_only_in_recorded_field_order
    is what checks the rest)."""
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
            if known_gap:
                break
    took = time.monotonic() - started
    writes = [len(o.writes) for o in clean.outcomes]
    print(f"\nwrites per command {writes}, {len(points)} kill points, {len(bad)} bad, "
          f"{took:.1f}s")
    assert not bad, "\n".join(f"{p}: {'; '.join(v)}" for p, v in list(bad.items())[:15])


PARAMS = [pytest.param((s, c), id=f"{s}-{c}") for s in STRATEGIES for c in COLLECTIONS]


#: why the in-place scenario's records differ after a resume on a server without ``$expr``
NO_EXPR_ORDER = (
    "issue 16: no $expr (FerretDB 1.x, mongo-java-server): a step cut short is rolled back by $set, "
    "which puts a removed field back after the others, not in its place, so the re-run "
    "records that order (undo records' 'k'), not the clean run's; data and end state equal "
    "(test_a_resumed_in_place_run_differs_only_in_recorded_field_order)")


def _is_known_gap(request) -> bool:
    return request.node.get_closest_marker("xfail") is not None


@pytest.fixture(autouse=True)
def _known_gap(request, mongo_server):
    """On a server without ``$expr`` an in-place step resumed after a kill mid-pass
    records the field order the roll-back left (see :data:`NO_EXPR_ORDER`)."""
    callspec = getattr(request.node, "callspec", None)
    param = callspec.params.get("kill_points") if callspec else None
    if (mongo_server in ("ferretdb", "javaserver") and param and param[0] == "in_place"
            and request.node.originalname.startswith("test_every_write_survives")):
        request.node.add_marker(pytest.mark.xfail(reason=NO_EXPR_ORDER, strict=True))


@pytest.mark.parametrize("kill_points", PARAMS, indirect=True)
def test_every_write_survives_a_kill_after_it(kill_points, request):
    run_points(kill_points, after=True, known_gap=_is_known_gap(request))


@pytest.mark.slow
@pytest.mark.parametrize("kill_points", PARAMS, indirect=True)
def test_every_write_survives_a_kill_before_it(kill_points, request):
    run_points(kill_points, after=False, known_gap=_is_known_gap(request))


def _without_recorded_order(image):
    """:func:`mongrate_state` with the undo records' field order (``k``) left out."""
    import bson

    state = mongrate_state(image)
    state["side"] = {n: sorted(bson.encode({k: v for k, v in bson.decode(r).items()
                                            if k != "k"}) for r in recs)
                     for n, recs in state["side"].items()}
    return state


@pytest.mark.parametrize("kill_points", [pytest.param(("in_place", "items"), id="in_place")],
                         indirect=True)
def test_a_resumed_in_place_run_differs_only_in_recorded_field_order(kill_points):
    """What the xfail above (:data:`NO_EXPR_ORDER`) lets through, and nothing more: after a
    kill anywhere in the in-place upgrade and a resume, every later state (the upgrade,
    the failing upgrade, the downgrade to base) equals the clean run's byte for byte but
    for the undo records' original field order; the downgrade's end state exactly."""
    kp = kill_points
    kp.state = _without_recorded_order
    clean = kp.record(COMMANDS)
    assert [o.code for o in clean.outcomes] == EXIT_CODES, [o.err for o in clean.outcomes]
    bad = {}
    for point in kp.points(clean, before=False, commands=[0]):
        problems = kp.try_point(clean, point, follow=True)
        if problems:
            bad[str(point)] = problems
    assert not bad, bad


# ------------------------------------------------------------ the bugs it found, one by one
CHANGE = 'op.change_each({coll!r}, lambda d: d.update(n=d["n"] * 10 + 1))'


@pytest.fixture
def one_change(project, mongo_db):
    """A rewrite revision changing every document of ``fs.files`` or ``items``."""
    def make(coll: str) -> KillPoints:
        project.write_ini(write_strategy="rewrite", batch_size="8")
        project.add("aaaa1111", None, body_up=CHANGE.format(coll=coll))
        mongo_db[coll].insert_many([{"_id": i, "n": i} for i in range(20)])
        return KillPoints(project.path, project.ini, mongo_db)
    return make


def numbers(db, coll):
    return sorted(d["n"] for d in db[coll].find())


@COPY_BACK_ONLY
@pytest.mark.parametrize("command", [["upgrade", "head"], ["downgrade", "base"]])
def test_a_kill_after_a_copy_back_keeps_the_copied_collection(one_change, mongo_db, command):
    """FerretDB cannot rename a name with a dot, so the rewritten copy is copied back.
    Killed after the copy was dropped and before the pass was marked done, the next run
    found the state "copying", dropped the complete live collection and copied from
    nothing: an empty collection, exit 0, and check said ok."""
    with one_change("fs.files") as kp:
        original = numbers(mongo_db, "fs.files")
        changed = [10 * n + 1 for n in original]
        if command[0] == "downgrade":
            assert kp.run_here("upgrade", "head").code == 0
        scratch = r"drop mongrate_tmp_aaaa1111_(1|restore)_fs\.files$"  # 1st: before building
        r = kp.run(*command, kill=KillAt(match=scratch, nth=2, when="after"))
        assert r.killed, r.err
        assert kp.run_here("unlock", "--force").code == 0
        r = kp.run_here(*command)
        assert r.code == 0, r.err
        assert numbers(mongo_db, "fs.files") == (changed if command[0] == "upgrade"
                                                  else original)
        if command[0] == "upgrade":
            assert kp.run_here("check").code == 0
            assert kp.run_here("downgrade", "base").code == 0
            assert numbers(mongo_db, "fs.files") == original


@pytest.mark.parametrize("coll", ["items", "fs.files"])
def test_a_kill_inside_a_restore_s_swap_still_restores(one_change, mongo_db, coll):
    """Killed after the restore pass recorded "built" and before the live collection was
    dropped: the next downgrade dropped the restored copy as a never-swapped one, read
    "built" with its copy gone as swapped, reported "restored 0", exited 0 and deleted the
    undo records, while every document stayed changed."""
    with one_change(coll) as kp:
        original = numbers(mongo_db, coll)
        assert kp.run_here("upgrade", "head").code == 0
        r = kp.run("downgrade", "base", kill=KillAt(
            match=r"renameCollection .*mongrate_tmp_aaaa1111_restore_", when="before"))
        assert r.killed, r.err
        assert kp.run_here("unlock", "--force").code == 0
        r = kp.run_here("downgrade", "base")
        assert r.code == 0, r.err
        assert numbers(mongo_db, coll) == original
        assert not [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_")
                    and n not in ("mongrate_log", "mongrate_lock", "mongrate_undo",
                                  "mongrate_version")]


@COPY_BACK_ONLY
@pytest.mark.parametrize("command", [["upgrade", "head"], ["downgrade", "base"]])
def test_a_swap_that_cannot_tell_which_copy_is_complete_stops_and_drops_nothing(
        one_change, mongo_db, command):
    """Killed while copying back (the copy complete, the live collection part filled),
    then the copy dropped by hand: the live collection may be incomplete and nothing can
    tell. The next run must neither drop it nor call it done: one line, exit 1."""
    with one_change("fs.files") as kp:
        if command[0] == "downgrade":
            assert kp.run_here("upgrade", "head").code == 0
        r = kp.run(*command, kill=KillAt(match=r"^insert fs\.files$", when="after"))
        assert r.killed, r.err
        left = numbers(mongo_db, "fs.files")
        assert 0 < len(left) < 20  # part filled
        tmp = [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp_")]
        assert len(tmp) == 1
        mongo_db.drop_collection(tmp[0])
        kp.run_here("unlock", "--force")
        r = kp.run_here(*command)
        assert r.code == 1
        last = r.err.strip().splitlines()[-1]
        assert last.startswith("mongrate: error: ") and "Traceback" not in r.err
        assert "cannot tell whether fs.files is complete" in last
        assert numbers(mongo_db, "fs.files") == left  # nothing dropped
        assert kp.run_here("check").code == 1


def test_the_harness_counts_writes_and_only_writes():
    assert write_target("insert", {"insert": "items", "documents": []}) == "items"
    assert write_target("renameCollection", {"renameCollection": "d.a", "to": "d.b"}) == "d.a"
    assert write_target("aggregate", {"aggregate": "items", "pipeline": [{"$out": "x"}]}) \
        == "items"
    assert write_target("aggregate", {"aggregate": "items", "pipeline": [{"$match": {}}]}) \
        is None
    assert write_target("find", {"find": "items"}) is None
    assert write_target("listCollections", {"listCollections": 1}) is None
    with pytest.raises(ValueError):
        KillAt()
