"""RevisionGraph: validation, targets, plans and version-table rules (pure Python, no database)."""

from __future__ import annotations

import random
import re

import pytest

from mongrate.errors import (
    AmbiguousRevisionError,
    GraphError,
    MultipleHeadsError,
    RangeError,
    RevisionNotFoundError,
)
from mongrate.graph.revisions import Revision, RevisionGraph, format_rev_line


def rev(rid: str, *down: str, deps: tuple[str, ...] = (), labels: tuple[str, ...] = (),
        date: str | None = None) -> Revision:
    return Revision(rid, down, deps, frozenset(labels), f"msg {rid}", f"versions/{rid}.py", date)


def graph(*revs: Revision) -> RevisionGraph:
    return RevisionGraph(revs)


def upgrade_all(g: RevisionGraph, heads: tuple[str, ...], plan: list[str]) -> tuple[str, ...]:
    for r in plan:
        heads = g.heads_after_upgrade(heads, r)
    return heads


def downgrade_all(g: RevisionGraph, heads: tuple[str, ...], plan: list[str]) -> tuple[str, ...]:
    for r in plan:
        heads = g.heads_after_downgrade(heads, r)
    return heads


def downgrade_to(g: RevisionGraph, spec: str, heads: tuple[str, ...]) -> tuple[str, ...]:
    """The heads after 'downgrade spec', one step at a time as the runner moves them."""
    return downgrade_all(g, heads, g.downgrade_plan(heads, spec))


# a1 -> b2 -> c3
LINEAR = (rev("a1a1a1", date="2026-01-01"), rev("b2b2b2", "a1a1a1"), rev("c3c3c3", "b2b2b2"))

# a -> b (branch point) -> c (label feat) -> e (merge of c, d); b -> d
DIAMOND = (
    rev("aaaa01"),
    rev("bbbb02", "aaaa01"),
    rev("cccc03", "bbbb02", labels=("feat",)),
    rev("dddd04", "bbbb02"),
    rev("eeee05", "cccc03", "dddd04"),
)

# b -> c (feat) and b -> d, not merged
FORK = DIAMOND[:4]


# ---------------------------------------------------------------- structure
def test_linear_chain_structure_and_plans():
    g = graph(*reversed(LINEAR))
    assert [r.revision for r in g] == ["a1a1a1", "b2b2b2", "c3c3c3"]
    assert g.heads == ("c3c3c3",) and g.bases == ("a1a1a1",)
    assert len(g) == 3 and "b2b2b2" in g and "b2b2" not in g
    assert g.children("a1a1a1") == ("b2b2b2",)
    assert g.ancestors(["c3c3c3"], inclusive=False) == {"a1a1a1", "b2b2b2"}
    assert g.descendants(["a1a1a1"]) == {"a1a1a1", "b2b2b2", "c3c3c3"}
    assert g.upgrade_plan((), ("c3c3c3",)) == ["a1a1a1", "b2b2b2", "c3c3c3"]
    assert g.upgrade_plan(("a1a1a1",), ("c3c3c3",)) == ["b2b2b2", "c3c3c3"]
    assert g.upgrade_plan(("c3c3c3",), ("a1a1a1",)) == []  # below current: never a downgrade
    assert g.downgrade_plan(("c3c3c3",), ("a1a1a1",)) == ["c3c3c3", "b2b2b2"]
    assert g.downgrade_plan(("c3c3c3",), ()) == ["c3c3c3", "b2b2b2", "a1a1a1"]
    assert upgrade_all(g, (), g.upgrade_plan((), ("c3c3c3",))) == ("c3c3c3",)
    assert downgrade_all(g, ("c3c3c3",), ["c3c3c3", "b2b2b2"]) == ("a1a1a1",)
    assert downgrade_all(g, ("a1a1a1",), ["a1a1a1"]) == ()


def test_order_is_deterministic_whatever_the_input_order():
    revs = list(DIAMOND) + [rev("ffff06"), rev("9999aa", "ffff06", deps=("cccc03",))]
    orders = set()
    for seed in range(6):
        random.Random(seed).shuffle(revs)
        g = RevisionGraph(revs)
        orders.add((tuple(r.revision for r in g), g.heads, g.bases))
    assert len(orders) == 1
    (order, heads, bases), = orders
    assert order.index("cccc03") < order.index("9999aa")  # dependency first
    assert heads == ("9999aa", "eeee05") and bases == ("aaaa01", "ffff06")


def test_branch_point_two_heads_and_merge():
    fork = graph(*FORK)
    assert fork.heads == ("cccc03", "dddd04")
    assert fork.is_branch_point("bbbb02") and not fork.is_branch_point("cccc03")
    assert fork.children("bbbb02") == ("cccc03", "dddd04")
    g = graph(*DIAMOND)
    assert g.heads == ("eeee05",)
    assert g.is_merge_point("eeee05") and not g.is_merge_point("cccc03")
    assert g.upgrade_plan(("cccc03",), ("eeee05",)) == ["dddd04", "eeee05"]


# ---------------------------------------------------------------- version-table rules
def test_heads_after_branch_creation_merge_unmerge_and_branch_deletion():
    g = graph(*DIAMOND)
    # creating a branch: the new branch's first revision joins the other head
    assert g.heads_after_upgrade(("cccc03",), "dddd04") == ("cccc03", "dddd04")
    # a merge replaces both parents
    assert g.heads_after_upgrade(("cccc03", "dddd04"), "eeee05") == ("eeee05",)
    # unmerge restores both parents as heads
    assert g.heads_after_downgrade(("eeee05",), "eeee05") == ("cccc03", "dddd04")
    # deleting a branch: its parent is still below the other head, so it just goes
    assert g.heads_after_downgrade(("cccc03", "dddd04"), "dddd04") == ("cccc03",)
    # the last revision of the last branch gives way to its parent
    assert g.heads_after_downgrade(("cccc03",), "cccc03") == ("bbbb02",)
    assert g.heads_after_upgrade(("bbbb02",), "cccc03") == ("cccc03",)


def test_heads_rules_refuse_impossible_moves():
    g = graph(*DIAMOND)
    with pytest.raises(RangeError, match="cannot apply eeee05 before dddd04"):
        g.heads_after_upgrade(("cccc03",), "eeee05")
    with pytest.raises(RangeError, match="already applied"):
        g.heads_after_upgrade(("cccc03",), "bbbb02")
    with pytest.raises(RangeError, match="not a current head"):
        g.heads_after_downgrade(("cccc03",), "bbbb02")


def test_depends_on_orders_plans_and_rows_are_alembics():
    # two streams: account a1 -> a2, networking n1 -> n2 where n2 needs a2 (by prefix)
    g = graph(rev("a1000001", labels=("account",)), rev("a2000002", "a1000001"),
              rev("f1000001", labels=("net",)), rev("f2000002", "f1000001", deps=("a200",)))
    assert g.dependencies("f2000002") == ("a2000002",)
    assert g.heads == ("a2000002", "f2000002")  # a dependency does not make a child
    plan = g.upgrade_plan((), g.resolve("net@head"))
    assert plan.index("a2000002") < plan.index("f2000002") and len(plan) == 4
    heads = upgrade_all(g, (), plan)
    assert heads == ("f2000002",)  # Alembic's rows: f2 implies a2, so a2 has no row
    assert g.applied(heads) == {"a1000001", "a2000002", "f1000001", "f2000002"}
    # '-1' is then unambiguous, and un-applying f2 brings a2's row back
    assert g.downgrade_plan(heads, "-1") == ["f2000002"]
    assert downgrade_to(g, "-1", heads) == ("a2000002", "f1000001")
    # un-applying the dependency un-applies its dependent first
    down = g.downgrade_plan(heads, ("a1000001", "f1000001"))
    assert down == ["f2000002", "a2000002"]
    assert downgrade_all(g, heads, down) == ("a1000001", "f1000001")
    # Alembic's rule for 'downgrade a1': what depends on a removed revision goes too
    assert downgrade_to(g, "a1000001", heads) == ("a1000001", "f1000001")
    assert downgrade_to(g, "account@base", heads) == ("f1000001",)
    # applying the dependency after its dependent's branch: both rows stay
    assert upgrade_all(g, ("f1000001",), ["a1000001"]) == ("a1000001", "f1000001")


def test_depends_on_a_label_and_downgrade_restores_a_dependency_head():
    # r revises p and depends on d; s revises d. With s applied, d is covered by s.
    g = graph(rev("dddd01", labels=("data",)), rev("pppp01"),
              rev("rrrr01", "pppp01", deps=("data",)), rev("ssss01", "dddd01"))
    assert g.dependencies("rrrr01") == ("dddd01",)
    heads = g.heads_after_upgrade(("dddd01", "rrrr01"), "ssss01")
    assert heads == ("rrrr01", "ssss01")
    heads = g.heads_after_downgrade(heads, "ssss01")
    assert heads == ("rrrr01",)  # d is still applied, through r's dependency
    # un-applying r must keep d applied: it comes back as a head
    assert g.heads_after_downgrade(heads, "rrrr01") == ("dddd01", "pppp01")


# ---------------------------------------------------------------- targets
def test_absolute_targets():
    g = graph(*DIAMOND)
    assert g.resolve("head") == ("eeee05",)
    assert g.resolve("heads") == ("eeee05",)
    assert g.resolve("base") == ()
    assert g.resolve("  cccc03 ") == ("cccc03",)
    assert g.resolve("dddd") == ("dddd04",)
    assert g.resolve("feat") == ("cccc03",)
    assert g.resolve("feat@head") == ("eeee05",)
    assert g.resolve("feat@base") == ()
    with pytest.raises(MultipleHeadsError, match="merge's parents"):
        g.resolve("head-1")  # as Alembic: a revision below a merge is ambiguous
    assert g.resolve("cccc03-1") == ("bbbb02",)
    assert g.resolve("aaaa01+1") == ("bbbb02",)
    assert g.resolve("cccc+1") == ("eeee05",)
    assert g.resolve("current", ["cccc03", "dddd04"]) == ("cccc03", "dddd04")
    assert g.resolve_one("feat") == "cccc03"
    assert g.resolve_one("cccc03-2") == "aaaa01"
    assert graph().resolve("heads") == () and graph().resolve("head") == ()


def test_relative_targets():
    lin = graph(*LINEAR)
    assert lin.resolve("+1") == ("a1a1a1",)  # from base
    assert lin.resolve("+2", ["a1a1a1"]) == ("c3c3c3",)
    assert lin.resolve("-1", ["c3c3c3"]) == ("b2b2b2",)
    assert lin.resolve("-3", ["c3c3c3"]) == ()  # stepping off the first revision is base
    assert lin.resolve("head-2") == ("a1a1a1",)
    g = graph(*DIAMOND)
    # stepping down from a merge leaves both parents: one step
    assert g.resolve("-1", ["eeee05"]) == ("cccc03", "dddd04")
    # along a branch: from the branch's current head, or its applied base side
    assert g.resolve("feat@-2", ["eeee05"]) == ("bbbb02",)
    assert g.resolve("feat@+1", ["bbbb02"]) == ("cccc03",)
    assert g.resolve("feat@+1", ["dddd04"]) == ("cccc03",)  # b is applied under d
    assert g.resolve("feat@+1", ["cccc03", "dddd04"]) == ("eeee05",)
    fork = graph(*FORK)
    assert fork.resolve("feat@+1", ["dddd04"]) == ("cccc03",)
    assert fork.resolve("feat@-1", ["cccc03", "dddd04"]) == ("bbbb02",)
    assert fork.resolve("+1", ["aaaa01"]) == ("bbbb02",)


def test_relative_with_one_movable_head_among_several():
    fork = graph(*FORK, rev("ffff05", "cccc03"))
    # d is a head of the graph, c can move: '+1' is unambiguous
    assert fork.resolve("+1", ["cccc03", "dddd04"]) == ("ffff05",)
    assert fork.resolve("feat@+1", ["cccc03", "dddd04"]) == ("ffff05",)
    assert fork.resolve_one("feat@+1", ["cccc03", "dddd04"]) == "ffff05"


def test_downgrade_keeps_unrelated_branches():
    fork = graph(*FORK)
    heads = ("cccc03", "dddd04")
    assert downgrade_to(fork, "feat@-1", heads) == ("dddd04",)
    assert downgrade_to(fork, "bbbb02", heads) == ("bbbb02",)  # everything above b goes
    assert downgrade_to(fork, "feat@base", heads) == ("dddd04",)
    assert downgrade_to(fork, "base", heads) == ()
    assert downgrade_to(fork, "-1", ("dddd04",)) == ("bbbb02",)
    g = graph(*DIAMOND)
    assert downgrade_to(g, "-1", ("eeee05",)) == ("cccc03", "dddd04")  # un-merge
    with pytest.raises(RangeError, match="eeee05 is not applied; did you mean upgrade"):
        g.downgrade_plan(("cccc03",), "head")


def test_branch_heads_and_ancestry_without_dependencies():
    g = graph(*FORK, rev("ffff05", "cccc03"), rev("9999aa", "cccc03", deps=("dddd04",)))
    with pytest.raises(MultipleHeadsError, match=r"branch feat has 2 heads \(9999aa, ffff05\)"):
        g.resolve("feat@head")
    assert g.resolve("feat@heads") == ("9999aa", "ffff05")
    assert g.resolve("bbbb02@heads") == ("9999aa", "dddd04", "ffff05")
    assert "dddd04" in g.ancestors(["9999aa"])
    assert "dddd04" not in g.ancestors(["9999aa"], dependencies=False)
    assert "9999aa" not in g.descendants(["dddd04"], dependencies=False)
    assert g.is_ancestor("dddd04", "9999aa") and not g.is_ancestor("dddd04", "9999aa",
                                                                     dependencies=False)
    assert g.branch_root("ffff05") == "ffff05"  # its parent c is a branch point
    assert g.branch_root("cccc03") == "cccc03"
    assert graph(*LINEAR).branch_root("c3c3c3") == "a1a1a1"


def test_relative_targets_act_as_naming_what_they_resolve_to():
    # a -> b -> c -> d, and e on a: 'd-3' is a, so it un-applies e too, as 'downgrade a' does
    g = graph(rev("aaaa01"), rev("bbbb02", "aaaa01"), rev("cccc03", "bbbb02"),
              rev("dddd04", "cccc03"), rev("eeee05", "aaaa01"))
    heads = ("dddd04", "eeee05")
    assert g.downgrade_plan(heads, "dddd04-3") == g.downgrade_plan(heads, "aaaa01")
    assert downgrade_to(g, "dddd-3", heads) == ("aaaa01",)
    assert g.downgrade_plan(("dddd04",), "bbbb02+1") == ["dddd04"]  # as 'downgrade cccc03'
    assert g.upgrade_plan((), "base+1") == ["aaaa01"]
    assert g.upgrade_plan(("bbbb02",), "dddd04-4") == []  # base: nothing to do
    with pytest.raises(RangeError, match="nothing is below base"):
        g.resolve("base-1")
    with pytest.raises(RangeError, match="would go down"):
        g.upgrade_plan(("bbbb02",), "-1")
    with pytest.raises(RangeError, match="would go up"):
        g.downgrade_plan(("bbbb02",), "+1")
    with pytest.raises(MultipleHeadsError, match="needs one target"):
        g.downgrade_plan(heads, "heads")


def test_label_step_down_stays_on_its_branch():
    # a, then b (lab) and c on a; b -> f; m merges f and c and carries on the branch
    g = graph(rev("aaaa01"), rev("bbbb02", "aaaa01", labels=("lab",)), rev("cccc03", "aaaa01"),
              rev("ffff04", "bbbb02"), rev("mmmm05", "ffff04", "cccc03"))
    assert g.branch_members("bbbb02") == {"bbbb02", "ffff04", "mmmm05"}
    with pytest.raises(RangeError, match="nothing of branch lab is applied"):
        g.downgrade_plan(("cccc03",), "lab@-1")
    with pytest.raises(RangeError, match="nothing of branch lab is applied"):
        g.downgrade_plan(("aaaa01",), "lab@-1")  # the trunk is not the branch
    assert g.downgrade_plan(("cccc03", "ffff04"), "lab@-1") == ["ffff04"]
    # at the merge the walk follows the branch's parent: m, then f
    assert g.downgrade_plan(("mmmm05",), "lab@-2") == ["mmmm05", "ffff04"]
    assert downgrade_to(g, "lab@-2", ("mmmm05",)) == ("bbbb02", "cccc03")
    with pytest.raises(RangeError, match="steps below branch lab"):
        g.downgrade_plan(("mmmm05",), "lab@-4")
    assert downgrade_to(g, "lab@base", ("mmmm05",)) == ("cccc03",)


def test_stamp_heads():
    g = graph(*FORK, rev("eeee05", deps=("cccc03",)))
    assert g.stamp_heads(["feat"], ("dddd04",)) == ("cccc03", "dddd04")
    assert g.stamp_heads(["bbbb02"], ("cccc03", "dddd04")) == ("bbbb02",)
    assert g.stamp_heads(["feat@base"], ("cccc03", "dddd04")) == ("dddd04",)
    assert g.stamp_heads(["base"], ("cccc03",)) == ()
    assert g.stamp_heads(["eeee05"], ("cccc03",)) == ("eeee05",)  # c is below it: one row
    assert g.stamp_heads(["heads"], ()) == ("dddd04", "eeee05")
    assert g.stamp_heads(["aaaa01"], ("dddd04",), purge=True) == ("aaaa01",)
    assert g.stamp_heads(["-1"], ("dddd04",)) == ("bbbb02",)
    assert g.stamp_heads(["cccc03", "dddd04"], ("aaaa01",)) == ("cccc03", "dddd04")
    with pytest.raises(RevisionNotFoundError):
        g.stamp_heads([], ())


@pytest.mark.parametrize("rev_id", ["base", "head", "heads", "current", "ab@cd", "ab-1", "cd+1",
                                    "a:b", "a b", "a,b"])
def test_revision_ids_that_read_as_targets_are_refused(rev_id):
    with pytest.raises(GraphError, match=re.escape(f"x.py: revision id '{rev_id}' cannot be used")):
        RevisionGraph([Revision(rev_id, (), path="versions/x.py")])


def test_history_ranges_go_from_ancestor_to_descendant():
    g = graph(*FORK)
    with pytest.raises(RangeError, match="did you mean bbbb02:cccc03"):
        g.walk_range("cccc03:bbbb02")
    with pytest.raises(RangeError, match="cccc03 is not below dddd04; put the older"):
        g.walk_range("cccc03:dddd04")
    assert g.walk_range("feat@base:") == ["cccc03"]
    assert g.walk_range("bbbb02:cccc03") == ["cccc03", "bbbb02"]


# ---------------------------------------------------------------- errors
def test_graph_errors_name_what_is_wrong():
    with pytest.raises(GraphError) as exc:
        graph(rev("aaaa01", "cccc03"), rev("bbbb02", "aaaa01"), rev("cccc03", "bbbb02"),
              rev("dddd04", "cccc03"))
    msg = str(exc.value)
    assert "cycle" in msg and all(r in msg for r in ("aaaa01", "bbbb02", "cccc03"))
    assert "dddd04" not in msg  # only the loop, not what hangs off it
    with pytest.raises(GraphError, match=r"cycle: aaaa01 -> aaaa01"):
        graph(rev("aaaa01", "aaaa01"))
    with pytest.raises(GraphError, match="cycle"):  # a loop through a dependency
        graph(rev("aaaa01", deps=("bbbb02",)), rev("bbbb02", "aaaa01"))
    with pytest.raises(GraphError) as exc:
        RevisionGraph([rev("aaaa01"), Revision("aaaa01", (), path="versions/other.py")])
    assert "versions/aaaa01.py" in str(exc.value) and "versions/other.py" in str(exc.value)
    with pytest.raises(GraphError, match=r"versions/bbbb02.py.*unknown revision 'zzzz99'"):
        graph(rev("aaaa01"), rev("bbbb02", "zzzz99"))
    with pytest.raises(GraphError, match=r"versions/bbbb02.py.*depends on unknown .*'nope'"):
        graph(rev("aaaa01"), rev("bbbb02", "aaaa01", deps=("nope",)))
    with pytest.raises(GraphError, match=r"label 'x' is used by both aaaa01 .* and bbbb02"):
        graph(rev("aaaa01", labels=("x",)), rev("bbbb02", "aaaa01", labels=("x",)))
    with pytest.raises(GraphError, match="branch label 'head' is not allowed"):
        graph(rev("aaaa01", labels=("head",)))


def test_target_errors():
    g = graph(rev("abcd0001"), rev("abcd0002", "abcd0001"), rev("ffff0003", "abcd0001"))
    with pytest.raises(AmbiguousRevisionError) as exc:
        g.resolve("abcd")
    assert "abcd0001 (msg abcd0001)" in str(exc.value) and "abcd0002 (msg abcd0002)" in str(exc.value)
    with pytest.raises(RevisionNotFoundError, match="no revision matches 'eeee'"):
        g.resolve("eeee")
    with pytest.raises(RevisionNotFoundError, match="at least 4 characters"):
        g.resolve("ff")
    with pytest.raises(MultipleHeadsError) as exc:
        g.resolve("head")
    assert "abcd0002, ffff0003" in str(exc.value)
    for hint in ("'heads'", "'label@head'", "'mongrate merge'"):
        assert hint in str(exc.value)
    with pytest.raises(MultipleHeadsError, match="several current heads"):
        g.resolve("-1", ["abcd0002", "ffff0003"])
    with pytest.raises(MultipleHeadsError, match="abcd0001 is a branch point"):
        g.resolve("+1", ["abcd0001"])
    with pytest.raises(RangeError, match="is only 2 steps above base"):
        g.resolve("-3", ["abcd0002"])
    with pytest.raises(RangeError, match="goes past the head: ffff0003 is only 0 steps below"):
        g.resolve("ffff+1")
    with pytest.raises(RangeError, match="base is not a revision"):
        g.resolve_one("base")
    with pytest.raises(MultipleHeadsError, match="names 2 revisions"):
        g.resolve_one("heads")
    with pytest.raises(RevisionNotFoundError, match="empty"):
        g.resolve("  ")
    with pytest.raises(RangeError, match="not applied; did you mean upgrade"):
        g.downgrade_plan(["abcd0002"], ["ffff0003"])
    with pytest.raises(RevisionNotFoundError, match="'zzzz9999'"):
        g.upgrade_plan(["zzzz9999"], g.heads)
    lin = graph(*LINEAR)
    with pytest.raises(RangeError, match=r"a1a1a1 is only 2 steps below the head \(c3c3c3\)"):
        lin.resolve("a1a1+3")
    with pytest.raises(RangeError, match="base is only 3 steps below the head"):
        lin.resolve("+4")
    with pytest.raises(MultipleHeadsError, match="several heads"):
        graph(*DIAMOND).resolve("-2", ["eeee05"])


# ---------------------------------------------------------------- history
def test_walk_range():
    g = graph(*DIAMOND)
    everything = ["eeee05", "dddd04", "cccc03", "bbbb02", "aaaa01"]
    assert g.walk_range(None) == everything and g.walk_range(":") == everything
    assert g.walk_range("base:heads") == everything
    assert g.walk_range("cccc03:") == ["eeee05", "cccc03"]
    assert g.walk_range(":bbbb") == ["bbbb02", "aaaa01"]
    assert g.walk_range("bbbb02:cccc03") == ["cccc03", "bbbb02"]
    assert g.walk_range("current:", ["dddd04"]) == ["eeee05", "dddd04"]
    assert g.walk_range(":current", ["dddd04"]) == ["dddd04", "bbbb02", "aaaa01"]
    assert g.walk_range("-1:head", ["dddd04"]) == ["eeee05", "dddd04", "cccc03", "bbbb02"]
    assert g.walk_range("feat:feat@head") == ["eeee05", "cccc03"]
    with pytest.raises(RangeError, match="start:end"):
        g.walk_range("cccc03")


def test_format_rev_line():
    g = graph(*DIAMOND)
    assert format_rev_line(g, "aaaa01") == "<base> -> aaaa01, msg aaaa01"
    assert format_rev_line(g, "bbbb02") == "aaaa01 -> bbbb02 (branchpoint), msg bbbb02"
    assert (format_rev_line(g, "cccc03", current=frozenset({"cccc03"}))
            == "bbbb02 -> cccc03 (current) (feat), msg cccc03")
    assert (format_rev_line(g, "eeee05", current=frozenset({"eeee05"}))
            == "(cccc03, dddd04) -> eeee05 (head) (current) (mergepoint), msg eeee05")
    d = graph(rev("aaaa01", date="2026-11-23 12:00:00"),
              rev("bbbb02", "aaaa01", deps=("aaaa01",)), rev("cccc03", deps=("aaaa",),
                                                                labels=("y", "x")))
    text = format_rev_line(d, "cccc03", verbose=True).splitlines()
    assert text[0] == "<base> -> cccc03 (head) (x, y), msg cccc03"
    assert text[1:] == ["    Revision ID: cccc03", "    Revises: <base>", "    Depends on: aaaa01",
                        "    Branch names: x, y", "    Path: versions/cccc03.py", "",
                        "    msg cccc03"]
    assert "    Create Date: 2026-11-23 12:00:00" in format_rev_line(d, "aaaa01", verbose=True)


# ---------------------------------------------------------------- properties
def random_graph(rng: random.Random) -> list[Revision]:
    revs: list[Revision] = []
    for i in range(rng.randint(1, 12)):
        rid = f"{rng.randrange(16**6):06x}{i:02d}"  # ids in random order, unlike creation
        earlier = [r.revision for r in revs]
        k = 0 if not earlier or rng.random() < 0.15 else min(len(earlier), rng.choice((1, 1, 1, 2)))
        down = tuple(rng.sample(earlier, k))
        rest = [e for e in earlier if e not in down]
        deps = tuple(rng.sample(rest, 1)) if rest and rng.random() < 0.3 else ()
        revs.append(Revision(rid, down, deps))
    rng.shuffle(revs)
    return revs


def brute_ancestors(revs: list[Revision], ids: set[str]) -> set[str]:
    edges = {r.revision: set(r.down_revisions) | set(r.depends_on) for r in revs}
    out = set(ids)
    while True:
        more = set().union(*(edges[r] for r in out)) - out if out else set()
        if not more:
            return out
        out |= more


def test_plans_against_brute_force_on_random_graphs():
    for seed in range(200):
        rng = random.Random(seed)
        revs = random_graph(rng)
        g = RevisionGraph(revs)
        ids = sorted(g._revs)  # noqa: SLF001 - test needs the id list only
        for a in ids:
            for b in ids:
                assert g.is_ancestor(a, b) == (a in brute_ancestors(revs, {b})), (seed, a, b)
        # a reachable current state: upgrade from base to a random set
        start = set(rng.sample(ids, rng.randint(0, len(ids))))
        heads = upgrade_all(g, (), g.upgrade_plan((), start))
        applied = brute_ancestors(revs, start)
        assert g.applied(heads) == applied, seed
        # upgrade to a random target, one revision at a time
        target = set(rng.sample(ids, rng.randint(0, len(ids))))
        plan = g.upgrade_plan(heads, target)
        assert not set(plan) & applied
        for i, r in enumerate(plan):
            assert not brute_ancestors(revs, {r}) & set(plan[i + 1:]) - {r}, (seed, plan)
        heads = upgrade_all(g, heads, plan)  # raises if a parent were missing
        applied |= brute_ancestors(revs, target)
        assert g.applied(heads) == applied, seed
        # then down to a random applied set, one revision at a time
        down_to = set(rng.sample(sorted(applied), rng.randint(0, len(applied))))
        plan = g.downgrade_plan(heads, down_to)
        after = downgrade_all(g, heads, plan)
        assert g.applied(after) == brute_ancestors(revs, down_to), seed
        # 'downgrade <rev>': everything above it goes, nothing else
        if applied:
            t = rng.choice(sorted(applied))
            above = {r for r in applied if r != t and t in brute_ancestors(revs, {r})}
            keep = applied - {r for r in above
                              if any(c in brute_ancestors(revs, {r}) for c in g.children(t))}
            assert g.applied(downgrade_to(g, t, heads)) == keep, seed
        if len(heads) == 1:  # '-1' un-applies exactly the one head
            assert g.applied(downgrade_to(g, "-1", heads)) == applied - set(heads), seed
        assert heads == g.maximal(applied), seed  # rows are the applied set's maximal members


# ---------------------------------------------------------------- scale
def scale_graphs(n: int = 5000) -> tuple[list[Revision], list[Revision]]:
    """A random graph of ``n`` revisions (merges, branches, labels, depends_on), shuffled,
    and a plain chain of ``n``. bench/graph_scale.py times :func:`work_at_scale` on them."""
    rng = random.Random(5000)
    revs: list[Revision] = []
    tips: list[str] = []
    for i in range(n):
        rid = f"{rng.randrange(16**8):08x}{i:04d}"
        roll = rng.random()
        if not revs:
            down: tuple[str, ...] = ()
        elif roll < 0.03 and len(tips) > 1:  # merge two tips
            a, b = rng.sample(tips, 2)
            down = (a, b)
            tips = [t for t in tips if t not in (a, b)]
        elif roll < 0.06:  # branch off an earlier revision
            down = (rng.choice(revs).revision,)
        else:
            down = (tips.pop() if tips else revs[-1].revision,)
        deps = (rng.choice(revs).revision,) if revs and roll > 0.95 else ()
        labels = (f"b{i}",) if roll < 0.06 else ()
        revs.append(Revision(rid, down, deps, frozenset(labels)))
        tips.append(rid)
    rng.shuffle(revs)
    chain = [Revision(f"c{i:05d}", (f"c{i - 1:05d}",) if i else ()) for i in range(n)]
    return revs, chain


def work_at_scale(revs: list[Revision], chain: list[Revision]) -> None:
    """Build, plan, apply, resolve and plan back down on both graphs, checking each answer."""
    n = len(chain)
    g = RevisionGraph(revs)
    heads = g.heads
    assert len(g) == n and heads
    plan = g.upgrade_plan((), heads)
    state = upgrade_all(g, (), plan)
    assert g.applied(state) == set(g._revs)  # noqa: SLF001
    some = g.topo_sort([heads[0]])[0]
    assert g.resolve(some[:10]) == (some,)
    label = next(iter(next(r for r in g if r.branch_labels).branch_labels))
    g.resolve(f"{label}@heads")
    assert len(g.downgrade_plan(state, ())) == n
    c = RevisionGraph(chain)
    assert c.resolve(f"head-{n - 1}") == ("c00000",)
    assert c.resolve(f"-{n - 1}", [f"c{n - 1:05d}"]) == ("c00000",)
    assert c.upgrade_plan((), c.heads)[-1] == f"c{n - 1:05d}"


def test_five_thousand_revisions():
    """Every answer right at scale; how fast is bench/graph_scale.py's (no clock here: a
    busy machine must not fail the suite)."""
    work_at_scale(*scale_graphs(5000))
