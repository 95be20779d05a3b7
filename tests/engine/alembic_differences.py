"""Where mongrate means something else than Alembic, on purpose: the one list.

README.md's section "Where mongrate differs from Alembic" is these entries, one line each
(``test_readme_lists_exactly_these_differences`` keeps the two equal), and the differential
test (``test_alembic_differential.py``) accepts a disagreement with Alembic only when an
entry's ``applies`` says it explains it. Entries without ``applies`` are about commands the
differential test does not run (history, revision files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mongrate.graph.revisions import RevisionGraph

RELATIVE_FORMS = frozenset({"+N", "-N", "REV+N", "REV-N", "head-N", "base+N", "label@+N",
                            "label@-N"})
FROM_CURRENT = frozenset({"+N", "-N", "label@+N", "label@-N"})  # counted from the current heads


@dataclass(frozen=True)
class Outcome:
    """What one command did: success, the steps run in order, the version rows after."""

    ok: bool
    ran: tuple[tuple[str, str], ...] = ()
    rows: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Case:
    """One command given to both tools from the same version rows."""

    graph: RevisionGraph
    verb: str
    forms: tuple[str, ...]
    targets: tuple[str, ...]
    heads: tuple[str, ...]
    purge: bool
    alembic: Outcome
    mongrate: Outcome
    labels: dict[str, str] = field(default_factory=dict)  # label -> revision

    @property
    def form(self) -> str:
        return self.forms[0]

    @property
    def target(self) -> str:
        return self.targets[0]

    def applied(self) -> set[str]:
        return self.graph.applied(self.heads)


@dataclass(frozen=True)
class Difference:
    key: str
    text: str
    reason: str
    applies: Callable[[Case], bool] | None = None

    def readme_line(self) -> str:
        return f"- {self.text} *Why:* {self.reason}"


def _minimal_rows(c: Case) -> bool:
    a, m = c.alembic, c.mongrate
    return (a.ok and m.ok and sorted(a.ran) == sorted(m.ran) and a.rows != m.rows
            and m.rows == c.graph.maximal(a.rows))


def _needs_below_needs(c: Case) -> bool:
    if c.alembic.ok or not c.mongrate.ok or "KeyError" not in c.alembic.error:
        return False
    g = c.graph
    for rid, _ in c.mongrate.ran:
        needs = set(g.get(rid).down_revisions) | set(g.dependencies(rid))
        if len(g.maximal(needs)) < len(needs):
            return True
    return False


def _same_steps_other_order(c: Case) -> bool:
    a, m = c.alembic, c.mongrate
    return a.ok and m.ok and a.ran != m.ran and sorted(a.ran) == sorted(m.ran) and a.rows == m.rows


def _walk_left_branch(c: Case) -> bool:
    if c.verb != "downgrade" or c.form != "label@-N":
        return False
    members = c.graph.branch_members(c.labels[c.target.partition("@")[0]])
    a, m = c.alembic, c.mongrate
    return (not a.ok or any(r not in members for r, _ in a.ran)
            or (not m.ok and "branch" in m.error))


def _label_base(c: Case) -> bool:
    return c.verb in ("downgrade", "stamp") and "label@base" in c.forms


def _branch_head_in_downgrade(c: Case) -> bool:
    if c.verb != "downgrade" or c.form not in ("label@head", "label@heads"):
        return False
    try:
        return c.graph.resolve(c.target) != c.graph.resolve(c.target.partition("@")[2])
    except Exception:  # noqa: BLE001 - the global form is ambiguous: Alembic fails there
        return True


def _upgrade_to_base(c: Case) -> bool:
    return (c.verb == "upgrade" and c.form in ("REV-N", "head-N") and c.mongrate.ok
            and not c.alembic.ok and c.graph.resolve(c.target, c.heads) == ())


def _dependency_only_target(c: Case) -> bool:
    if c.verb != "downgrade" or c.form in FROM_CURRENT or not c.mongrate.ok or c.mongrate.ran:
        return False
    try:
        (t,) = c.graph.resolve(c.target, c.heads)
    except ValueError:
        return False
    applied = c.applied()
    return (t in applied and t not in c.heads
            and not any(child in applied for child in c.graph.children(t)))


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "order",
        "Revisions that do not depend on each other run oldest first (create date, then id); "
        "Alembic walks one branch after another in file-name order.",
        "both orders apply every revision after its parents and dependencies; Alembic's also "
        "depends on Python's hash seed once depends_on is involved, so it cannot be matched.",
        _same_steps_other_order,
    ),
    Difference(
        "minimal-rows",
        "The version rows never hold a revision that is below another row; after some "
        "downgrades through depends_on Alembic keeps such a row (the applied revisions are the "
        "same).",
        "one set of applied revisions has one set of rows, so `-1` and `current` see one head.",
        _minimal_rows,
    ),
    Difference(
        "needs-below-needs",
        "A revision whose parents and dependencies are not independent (one lies below "
        "another, e.g. it depends on a revision above its own parent) is applied like any "
        "other; Alembic stops with a KeyError while moving its version rows.",
        "what is applied is well defined, and the rows follow from it.",
        _needs_below_needs,
    ),
    Difference(
        "step-down-several-heads",
        "`downgrade -N` with several current heads is refused; Alembic warns and steps down "
        "from whichever version row comes first.",
        "Alembic deprecates it (\"will be disallowed in a future release\"); the row order is "
        "arbitrary, so the result would be too.",
        lambda c: (c.verb == "downgrade" and c.form == "-N" and len(c.heads) > 1
                   and not c.mongrate.ok),
    ),
    Difference(
        "step-off-merge",
        "`downgrade -1` from a merge revision un-applies the merge, leaving both parents as "
        "heads; Alembic refuses (\"Ambiguous walk\").",
        "-1 means one step, and un-applying the merge is that step.",
        lambda c: (c.verb == "downgrade" and c.form == "-N" and c.mongrate.ok
                   and not c.alembic.ok and "Ambiguous walk" in c.alembic.error
                   and c.graph.is_merge_point(c.mongrate.ran[-1][0])),
    ),
    Difference(
        "label-step-stays-on-branch",
        "`downgrade label@-N` steps down the branch only: it is refused when nothing of the "
        "branch is applied or when it would step below the branch's first revision, and at a "
        "merge it follows the parent on the branch; Alembic walks the whole tree from the "
        "branch's head, so it can un-apply the shared trunk and other branches, or stop with "
        "\"Ambiguous walk\" or an AssertionError.",
        "a label names one branch; a command naming it must not un-apply others.",
        _walk_left_branch,
    ),
    Difference(
        "label-base",
        "`label@base` in `downgrade` and `stamp` is the branch from where it leaves its branch "
        "point; Alembic un-applies (or un-records) everything in the label's lineage from its "
        "base, other branches and the shared trunk included.",
        "a label names one branch; the trunk below its branch point belongs to every branch.",
        _label_base,
    ),
    Difference(
        "label-head-in-downgrade",
        "`downgrade label@head` and `label@heads` resolve head(s) within the branch, as upgrade "
        "does; Alembic's downgrade resolves head(s) over the whole graph (and fails when there "
        "are several).",
        "the label should mean the same in every command.",
        _branch_head_in_downgrade,
    ),
    Difference(
        "upgrade-to-base",
        "`upgrade REV-N` that walks down to base does nothing, as `upgrade base` does; Alembic "
        "stops with an AssertionError.",
        "a relative target acts exactly as naming what it resolves to.",
        _upgrade_to_base,
    ),
    Difference(
        "dependency-only-target",
        "`downgrade REV` where REV is applied only as another head's dependency, with nothing "
        "of its own above it, does nothing; Alembic says it \"is not a valid downgrade "
        "target\".",
        "nothing is above REV, so there is nothing to un-apply, as at any head.",
        _dependency_only_target,
    ),
    Difference(
        "overlapping-targets",
        "`upgrade` to several revisions where one is a dependency of another (e.g. "
        "`label@heads`) applies them all; Alembic refuses (\"overlaps with other requested "
        "revisions\").",
        "the set of revisions to apply is well defined.",
        lambda c: (c.verb == "upgrade" and c.mongrate.ok and not c.alembic.ok
                   and "overlaps with other requested revisions" in c.alembic.error),
    ),
    Difference(
        "one-movable-head",
        "`upgrade +N` (or `label@+N`) with several current heads of which exactly one has "
        "anything above it moves that one; Alembic refuses (\"Ambiguous upgrade from multiple "
        "current revisions\").",
        "only one head can move, so the target is not ambiguous.",
        lambda c: (c.verb == "upgrade" and c.form in ("+N", "label@+N") and c.mongrate.ok
                   and not c.alembic.ok and "Ambiguous upgrade" in c.alembic.error),
    ),
    Difference(
        "stamp-relative",
        "`stamp` takes relative targets (`+N`, `-N`, `REV+N`, `REV-N`, `base+N`, `label@+N`, "
        "`label@-N`) and counts them from the current heads, as upgrade and downgrade do; "
        "Alembic's stamp refuses most of them and counts `label@-N` from the branch's head in "
        "the revision files.",
        "one grammar for every command that takes a target.",
        lambda c: c.verb == "stamp" and any(f in RELATIVE_FORMS for f in c.forms),
    ),
    Difference(
        "stamp-several",
        "`stamp` with several revisions (several arguments, `heads`, `label@heads`) records "
        "all of them, each replacing the heads on its own line; Alembic computes each against "
        "the rows before the stamp and can drop a row it just wrote or keep one below another.",
        "the rows must record exactly the revisions named.",
        lambda c: c.verb == "stamp" and (
            len(c.targets) > 1 or any(f in ("heads", "label@heads") for f in c.forms)),
    ),
    Difference(
        "base-minus",
        "`base-N` is refused (nothing is below base); Alembic walks down from its heads, so "
        "`base-1` means head.",
        "stepping down from base cannot reach a revision.",
    ),
    Difference(
        "current-target",
        "`current` (the database's heads) is accepted as an `upgrade`, `downgrade` or `stamp` "
        "target; Alembic accepts it only in `history -r`.",
        "`upgrade current` and `stamp current` are harmless no-ops that scripts can rely on.",
    ),
    Difference(
        "revision-ids",
        "Revision ids may not be `head`, `heads`, `base` or `current`, nor contain `@`, `+`, "
        "`-`, `:`, `,` or spaces; Alembic only rejects `@ - + :` in ids.",
        "an id that reads as a target keyword or a range cannot be named on the command line.",
    ),
    Difference(
        "history-label-base",
        "`history -r label@base:` lists the branch from where it leaves its branch point; "
        "Alembic also lists the trunk below it.",
        "`label@base` means the same as in downgrade.",
    ),
)
