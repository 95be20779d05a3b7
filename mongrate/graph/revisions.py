"""The revision graph as pure logic (Alembic's ``RevisionMap``): no I/O, no database.

Two kinds of edge join revisions:

- *down edges* (``down_revisions``) make the tree: children, heads, bases, branch points
  and merge points are defined by them alone;
- *dependency edges* (``depends_on``) only order things: a dependency is applied before
  its dependents and un-applied after them.

A *heads state* is what the version collection holds: revision ids whose ancestors
(both kinds of edge, inclusive) are exactly the applied revisions; ``()`` is base.
Every walk is iterative, so graphs of any depth work without touching the recursion limit.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mongrate.errors import (
    AmbiguousRevisionError,
    GraphError,
    MultipleHeadsError,
    RangeError,
    RevisionNotFoundError,
)

MIN_PREFIX = 4  # shortest partial id accepted, as in Alembic
RESERVED_NAMES = frozenset({"head", "heads", "base", "current"})
_RELATIVE = re.compile(r"^(?P<base>.*?)(?P<sign>[+-])(?P<n>\d+)$")
_STEP = re.compile(r"^(?P<sign>[+-])(?P<n>\d+)$")
_BAD_LABEL = re.compile(r"[@:,\s]")
_BAD_ID = re.compile(r"[@:,+\-\s]")


def revision_id_problem(rev_id: str) -> str | None:
    """Why ``rev_id`` cannot be a revision id (it would read as a target), or None."""
    if not rev_id:
        return "it is empty"
    if rev_id in RESERVED_NAMES:
        return f"{rev_id!r} is a target keyword (head, heads, base, current)"
    bad = sorted(set(_BAD_ID.findall(rev_id)))
    if bad:
        shown = ", ".join("space" if c.isspace() else repr(c) for c in bad)
        return f"it contains {shown}, which targets use (@ label, + and - steps, : ranges)"
    return None


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Revision:
    """One revision file's identity and edges, as loaded by ``scripts.py``."""

    revision: str
    down_revisions: tuple[str, ...]
    depends_on: tuple[str, ...] = ()
    branch_labels: frozenset[str] = frozenset()
    message: str = ""
    path: str | None = None
    create_date: str | None = None

    def __post_init__(self) -> None:
        # Loaders may hand over None, a str or a list; the graph relies on tuples/frozensets.
        object.__setattr__(self, "down_revisions", _as_tuple(self.down_revisions))
        object.__setattr__(self, "depends_on", _as_tuple(self.depends_on))
        object.__setattr__(self, "branch_labels", frozenset(_as_tuple(self.branch_labels)))


@dataclass(frozen=True)
class _Move:
    """A parsed target: the revisions it names and, for downgrades, what it un-applies
    (the ``drop`` revisions and everything applied above them)."""

    revs: tuple[str, ...]
    drop: frozenset[str]
    step: str = ""  # "+"/"-" when counted from the current heads (+N, -N, label@+N, label@-N)


def _where(rev: Revision) -> str:
    return rev.path or f"revision {rev.revision}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class RevisionGraph:
    """Validated revision DAG with Alembic's targets, plans and version-table rules."""

    def __init__(self, revisions: Iterable[Revision]) -> None:
        revs: dict[str, Revision] = {}
        for rev in revisions:
            if not isinstance(rev.revision, str) or not rev.revision.strip():
                raise GraphError(f"{_where(rev)} has an empty revision id; set revision = '<id>'")
            problem = revision_id_problem(rev.revision)
            if problem:
                raise GraphError(
                    f"{_where(rev)}: revision id {rev.revision!r} cannot be used: {problem}; "
                    "use letters, digits and '_'"
                )
            other = revs.get(rev.revision)
            if other is not None:
                raise GraphError(
                    f"duplicate revision id {rev.revision!r} in {_where(other)} and {_where(rev)}; "
                    "give one of them a new id"
                )
            revs[rev.revision] = rev
        self._revs = revs
        self._ids_sorted = sorted(revs)
        self._labels = self._collect_labels()
        self._parents: dict[str, tuple[str, ...]] = {}
        self._deps: dict[str, tuple[str, ...]] = {}  # resolved, minus those already parents
        for rid in self._ids_sorted:
            rev = revs[rid]
            for p in rev.down_revisions:
                if p not in revs:
                    raise GraphError(
                        f"{_where(rev)}: revision {rid} revises unknown revision {p!r}; "
                        "fix its down_revision or restore the missing file"
                    )
            parents = tuple(dict.fromkeys(rev.down_revisions))
            deps = (self._resolve_dependency(rev, d) for d in rev.depends_on)
            self._parents[rid] = parents
            self._deps[rid] = tuple(d for d in dict.fromkeys(deps) if d not in parents)
        children: dict[str, list[str]] = {r: [] for r in revs}
        dependents: dict[str, list[str]] = {r: [] for r in revs}
        for rid in self._ids_sorted:
            for p in self._parents[rid]:
                children[p].append(rid)
            for d in self._deps[rid]:
                dependents[d].append(rid)
        self._children = {r: tuple(c) for r, c in children.items()}
        self._dependents = {r: tuple(d) for r, d in dependents.items()}
        self._order = self._toposort_all()
        self._index = {rid: i for i, rid in enumerate(self._order)}
        self._bits_cache: dict[bool, list[int]] = {}
        self.heads: tuple[str, ...] = tuple(r for r in self._ids_sorted if not children[r])
        self.bases: tuple[str, ...] = tuple(r for r in self._ids_sorted if not self._parents[r])

    # ------------------------------------------------------------ construction
    def _collect_labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for rid in self._ids_sorted:
            rev = self._revs[rid]
            for label in sorted(rev.branch_labels):
                if not label or _BAD_LABEL.search(label) or label in RESERVED_NAMES:
                    raise GraphError(
                        f"{_where(rev)}: branch label {label!r} is not allowed; use a word "
                        "without '@', ':', ',' or spaces, other than head/heads/base/current"
                    )
                if label in self._revs:
                    raise GraphError(
                        f"{_where(rev)}: branch label {label!r} is also a revision id; rename it"
                    )
                if label in labels:
                    first = self._revs[labels[label]]
                    raise GraphError(
                        f"branch label {label!r} is used by both {first.revision} ({_where(first)}) "
                        f"and {rid} ({_where(rev)}); branch labels must be unique"
                    )
                labels[label] = rid
        return labels

    def _resolve_dependency(self, rev: Revision, name: str) -> str:
        try:
            return self._name(name)
        except AmbiguousRevisionError as exc:
            raise GraphError(f"{_where(rev)}: depends_on {exc}") from None
        except RevisionNotFoundError:
            raise GraphError(
                f"{_where(rev)}: revision {rev.revision} depends on unknown revision {name!r}; "
                "fix its depends_on or restore the missing file"
            ) from None

    def _toposort_all(self) -> list[str]:
        """Kahn's algorithm; ties go to the earlier create_date, then the smaller id."""
        key = {r: (self._revs[r].create_date or "", r) for r in self._revs}
        pending = {r: len(self._parents[r]) + len(self._deps[r]) for r in self._revs}
        ready = [key[r] for r, n in pending.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, rid = heapq.heappop(ready)
            order.append(rid)
            for nxt in self._children[rid] + self._dependents[rid]:
                pending[nxt] -= 1
                if pending[nxt] == 0:
                    heapq.heappush(ready, key[nxt])
        if len(order) < len(self._revs):
            raise GraphError(self._describe_cycle({r for r, n in pending.items() if n > 0}))
        return order

    def _describe_cycle(self, stuck: set[str]) -> str:
        # Every stuck revision has a stuck parent or dependency, so following them must loop.
        path: list[str] = []
        seen: dict[str, int] = {}
        node = min(stuck)
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = min(p for p in self._parents[node] + self._deps[node] if p in stuck)
        cycle = path[seen[node]:] + [node]
        files = ", ".join(_where(self._revs[r]) for r in cycle[:-1])
        return (
            f"the revisions form a cycle: {' -> '.join(cycle)} (each revises or depends on the "
            f"next; {files}); fix their down_revision/depends_on"
        )

    # ------------------------------------------------------------ basic queries
    def get(self, rev_id: str) -> Revision:
        """The revision with exactly this id."""
        try:
            return self._revs[rev_id]
        except (KeyError, TypeError):
            raise RevisionNotFoundError(f"no revision has the id {rev_id!r}") from None

    def __contains__(self, rev_id: object) -> bool:
        return rev_id in self._revs

    def __len__(self) -> int:
        return len(self._revs)

    def __iter__(self) -> Iterator[Revision]:
        """Revisions in topological order, bases first (deterministic)."""
        return (self._revs[r] for r in self._order)

    def children(self, rev_id: str) -> tuple[str, ...]:
        """Revisions whose down_revisions name ``rev_id``, sorted by id."""
        self.get(rev_id)
        return self._children[rev_id]

    def dependencies(self, rev_id: str) -> tuple[str, ...]:
        """``depends_on`` resolved to ids (labels and prefixes expanded, parents left out)."""
        self.get(rev_id)
        return self._deps[rev_id]

    def is_branch_point(self, rev_id: str) -> bool:
        return len(self.children(rev_id)) > 1

    def is_merge_point(self, rev_id: str) -> bool:
        return len(self.get(rev_id).down_revisions) > 1

    def _check(self, ids: Iterable[str]) -> list[str]:
        if isinstance(ids, str):  # a lone id is an easy mistake; don't iterate its characters
            ids = (ids,)
        out = list(dict.fromkeys(ids))
        for rid in out:
            if rid not in self._revs:
                raise RevisionNotFoundError(
                    f"unknown revision {rid!r}: no revision file defines it; restore the file "
                    "or 'mongrate stamp' a revision that exists"
                )
        return out

    def _walk(self, start: list[str], edges: tuple[dict[str, tuple[str, ...]], ...],
              inclusive: bool) -> set[str]:
        seen: set[str] = set()
        stack = list(start) if inclusive else [n for s in start for e in edges for n in e[s]]
        while stack:
            rid = stack.pop()
            if rid not in seen:
                seen.add(rid)
                for e in edges:
                    stack.extend(e[rid])
        return seen

    def ancestors(self, ids: Iterable[str], *, inclusive: bool = True,
                  dependencies: bool = True) -> set[str]:
        """Everything below ``ids``; exclusive means strict ancestors of each of them."""
        edges = (self._parents, self._deps) if dependencies else (self._parents,)
        return self._walk(self._check(ids), edges, inclusive)

    def descendants(self, ids: Iterable[str], *, inclusive: bool = True,
                    dependencies: bool = True) -> set[str]:
        """Everything above ``ids`` (dependents count as above when ``dependencies``)."""
        edges = (self._children, self._dependents) if dependencies else (self._children,)
        return self._walk(self._check(ids), edges, inclusive)

    def topo_sort(self, ids: Iterable[str]) -> list[str]:
        """``ids`` with parents and dependencies first, in the graph's fixed order."""
        return sorted(self._check(ids), key=self._index.__getitem__)

    def _bits(self, dependencies: bool) -> list[int]:
        """Ancestor sets (inclusive) as int bitsets over topological positions, built once."""
        table = self._bits_cache.get(dependencies)
        if table is None:
            table, idx = [], self._index
            for i, rid in enumerate(self._order):
                bits = 1 << i
                for p in self._parents[rid]:
                    bits |= table[idx[p]]
                if dependencies:
                    for d in self._deps[rid]:
                        bits |= table[idx[d]]
                table.append(bits)
            self._bits_cache[dependencies] = table
        return table

    def is_ancestor(self, ancestor: str, rev: str, *, dependencies: bool = True) -> bool:
        """True if ``ancestor`` is ``rev`` or lies below it."""
        self._check((ancestor, rev))
        return bool(self._bits(dependencies)[self._index[rev]] >> self._index[ancestor] & 1)

    def _covered(self, heads: list[str], rid: str) -> bool:
        """Is ``rid`` applied under ``heads``? Only heads later in topological order can
        lie above it, which keeps the per-step checks of a long run cheap."""
        if rid in heads:
            return True
        table, idx = self._bits(True), self._index
        i = idx[rid]
        return any(table[idx[h]] >> i & 1 for h in heads if idx[h] > i)

    def applied(self, heads: Iterable[str]) -> set[str]:
        """Revisions applied when the version collection holds ``heads``."""
        return self.ancestors(heads)

    def maximal(self, ids: Iterable[str]) -> tuple[str, ...]:
        """The members of ``ids`` below no other member (dependencies count): the version
        rows that record exactly the revisions ``ids`` and their ancestors."""
        ids = self._check(ids)
        table, idx = self._bits(True), self._index
        below = 0
        for rid in ids:
            below |= table[idx[rid]] & ~(1 << idx[rid])
        return tuple(sorted(r for r in ids if not below >> idx[r] & 1))

    @property
    def real_heads(self) -> tuple[str, ...]:
        """Heads that nothing depends on either: what ``heads`` names (Alembic's rule), so
        a revision that is only a dependency of another head is not a target of its own."""
        return tuple(h for h in self.heads if not self._dependents[h])

    # ------------------------------------------------------------ targets
    def _name(self, name: str) -> str:
        """An exact id, a branch label or a unique prefix of at least MIN_PREFIX characters."""
        if name in self._revs:
            return name
        if name in self._labels:
            return self._labels[name]
        if len(name) < MIN_PREFIX:
            raise RevisionNotFoundError(
                f"{name!r} names no revision or branch label, and a partial id needs at least "
                f"{MIN_PREFIX} characters"
            )
        ids = self._ids_sorted
        lo = bisect.bisect_left(ids, name)
        hi = lo
        while hi < len(ids) and ids[hi].startswith(name):
            hi += 1
        if hi == lo:
            raise RevisionNotFoundError(
                f"no revision matches {name!r}; 'mongrate history' lists the revisions"
            )
        if hi - lo > 1:
            found = ", ".join(f"{r} ({self._revs[r].message})" for r in ids[lo:min(hi, lo + 10)])
            more = f" and {hi - lo - 10} more" if hi - lo > 10 else ""
            raise AmbiguousRevisionError(
                f"{name!r} matches {hi - lo} revisions: {found}{more}; give more characters"
            )
        return ids[lo]

    def _current(self, current_heads: Iterable[str]) -> tuple[str, ...]:
        return tuple(self._check(current_heads))

    def _named(self, revs: Iterable[str]) -> _Move:
        """Going to named revisions un-applies whatever is above them (Alembic's rule);
        naming no revision is base, which un-applies everything."""
        revs = tuple(sorted(set(revs)))
        if not revs:
            return _Move((), frozenset(self.bases))
        below = self.ancestors(revs)
        drop = {c for r in revs for c in self._children[r]} - below
        return _Move(revs, frozenset(drop))

    def _single_head(self) -> tuple[str, ...]:
        if len(self.heads) > 1:
            raise MultipleHeadsError(
                f"there are {len(self.heads)} heads ({', '.join(self.heads)}); use 'heads' for all "
                "of them, 'label@head' for one branch, or 'mongrate merge' to join them"
            )
        return self.heads

    def _branch_heads(self, rid: str) -> tuple[str, ...]:
        return tuple(sorted(r for r in self.descendants([rid], dependencies=False)
                            if not self._children[r]))

    def branch_root(self, rev_id: str) -> str:
        """Lowest revision of ``rev_id``'s branch segment: walk down single parents until the
        parent is a branch point (or we reach a base or a merge)."""
        node = self.get(rev_id).revision
        while len(self._parents[node]) == 1 and len(self._children[self._parents[node][0]]) == 1:
            node = self._parents[node][0]
        return node

    def branch_members(self, rev_id: str) -> set[str]:
        """The revisions of ``rev_id``'s branch, as a branch label marks them: the revision,
        everything above it, and its segment down to where it leaves its branch point."""
        members = self.descendants([rev_id], dependencies=False)
        node, root = rev_id, self.branch_root(rev_id)
        while node != root:
            node = self._parents[node][0]
            members.add(node)
        return members

    def _parse(self, spec: str, current: tuple[str, ...]) -> _Move:
        if not isinstance(spec, str):
            raise RevisionNotFoundError(f"a revision target must be text, not {spec!r}")
        s = spec.strip()
        if not s:
            raise RevisionNotFoundError(
                "empty revision target; give a revision id, a branch label, head, heads or base"
            )
        if s == "base":
            return self._named(())
        if s == "heads":
            return self._named(self.real_heads)
        if s == "head":
            return self._named(self._single_head())
        if s == "current":
            return _Move(tuple(sorted(current)), frozenset())
        if s in self._revs or s in self._labels:
            return self._named((self._name(s),))
        if "@" in s:
            return self._parse_branch(s, current)
        m = _RELATIVE.match(s)
        if m:
            sign, n = m["sign"], self._steps(s, m["n"])
            if not m["base"]:
                return self._relative(s, None, sign, n, current)
            if m["base"].strip() == "base":
                if sign == "-":
                    raise RangeError(f"{s!r} goes below base: nothing is below base")
                return self._named((self._walk_up(s, None, n, None),))
            # REV+N / REV-N name one revision, then act exactly as naming it would
            start = self._one(s, self._parse(m["base"], current))
            if sign == "+":
                return self._named((self._walk_up(s, start, n, None),))
            level, _ = self._walk_down(s, start, n, None)
            if len(level) > 1:
                raise MultipleHeadsError(
                    f"{s!r} is ambiguous: {n} step(s) down from {start} is a merge's parents "
                    f"({', '.join(level)}); name one of them"
                )
            return self._named(level)
        return self._named((self._name(s),))

    def _parse_branch(self, s: str, current: tuple[str, ...]) -> _Move:
        branch, _, symbol = s.partition("@")
        if not branch:
            raise RevisionNotFoundError(f"{s!r}: put a branch label or revision before '@'")
        rid = self._name(branch)
        if symbol == "head":
            heads = self._branch_heads(rid)
            if len(heads) > 1:
                raise MultipleHeadsError(
                    f"{s!r} is ambiguous: branch {branch} has {len(heads)} heads "
                    f"({', '.join(heads)}); name one of them or 'mongrate merge' them"
                )
            return self._named(heads)
        if symbol == "heads":
            return self._named(self._branch_heads(rid))
        if symbol == "base":
            # the branch from where it leaves its branch point, not the shared trunk below
            return _Move((), frozenset({self.branch_root(rid)}))
        m = _STEP.match(symbol)
        if m:
            return self._relative(s, rid, m["sign"], self._steps(s, m["n"]), current)
        raise RevisionNotFoundError(f"{s!r}: after '@' write head, heads, base, +N or -N")

    @staticmethod
    def _steps(s: str, digits: str) -> int:
        n = int(digits)
        if n < 1:
            raise RangeError(f"{s!r}: a relative step must be at least 1")
        return n

    def _one(self, s: str, move: _Move) -> str:
        if not move.revs:
            raise RangeError(f"{s!r} means base, and base is not a revision")
        if len(move.revs) > 1:
            raise MultipleHeadsError(
                f"{s!r} names {len(move.revs)} revisions ({', '.join(move.revs)}); name one of them"
            )
        return move.revs[0]

    def _tips(self, revs: set[str]) -> list[str]:
        """Members of ``revs`` with no child in ``revs`` (down edges only)."""
        return sorted(r for r in revs if not any(c in revs for c in self._children[r]))

    def _relative(self, s: str, branch: str | None, sign: str, n: int,
                  current: tuple[str, ...]) -> _Move:
        """``+N``/``-N`` from the current heads; with a branch, only along that branch."""
        label = s.partition("@")[0]
        where = f" on branch {label}" if branch else ""
        if sign == "-":
            # step down from the one current head (of the branch): un-apply N revisions
            scope: set[str] | None = None
            starts = sorted(current)
            if branch is not None:
                scope = self.branch_members(branch)
                starts = self._tips(self.applied(current) & scope)
                if not starts:
                    raise RangeError(
                        f"{s!r}: nothing of branch {label} is applied (it starts at "
                        f"{self.branch_root(branch)}), so there is nothing to step down from"
                    )
            if not starts:
                raise RangeError(f"{s!r}: nothing is applied, so there is no step down")
            if len(starts) > 1:
                raise MultipleHeadsError(
                    f"{s!r} is ambiguous: there are several current heads{where} "
                    f"({', '.join(starts)}); use label@-N or a revision id"
                )
            level, last = self._walk_down(s, starts[0], n, scope)
            return _Move(tuple(level), frozenset({last}), "-")
        scope = None
        starts = sorted(current)
        if branch is not None:
            scope = (self.ancestors([branch], dependencies=False)
                     | self.descendants([branch], dependencies=False))
            starts = [h for h in current if h in scope]
            if not starts:  # nothing of the branch is a head: start from its applied base side
                starts = self._tips(self.applied(current) & scope)
        if not starts:
            return _Move((self._walk_up(s, None, n, scope),), frozenset(), "+")
        movable = [h for h in starts if any(scope is None or c in scope for c in self._children[h])]
        if len(movable) == 1:
            return _Move((self._walk_up(s, movable[0], n, scope),), frozenset(), "+")
        if not movable:
            raise RangeError(f"{s!r} goes past the head: nothing is above {', '.join(starts)}")
        raise MultipleHeadsError(
            f"{s!r} is ambiguous: several current heads{where} can move up "
            f"({', '.join(movable)}); use label@+N or a revision id"
        )

    def _walk_up(self, s: str, start: str | None, n: int, scope: set[str] | None) -> str:
        node = start
        for i in range(n):
            options = self.bases if node is None else self._children[node]
            options = tuple(o for o in options if scope is None or o in scope)
            if not options:
                top = f" ({node})" if i else ""
                raise RangeError(
                    f"{s!r} goes past the head: {start or 'base'} is only "
                    f"{_plural(i, 'step')} below the head{top}"
                )
            if len(options) > 1:
                fork = "there are several bases" if node is None else f"{node} is a branch point"
                raise MultipleHeadsError(
                    f"{s!r} is ambiguous: {fork} ({', '.join(options)}); "
                    "use label@+N or a revision id"
                )
            node = options[0]
        return node  # type: ignore[return-value]

    def _walk_down(self, s: str, start: str, n: int,
                   scope: set[str] | None) -> tuple[list[str], str]:
        """Step down N times along down_revisions: the revisions below, and the last one
        stepped off. Stepping off a merge lands on its parents (one step); within ``scope``
        (a branch) a merge is left by its parent on the branch, and the walk may not step
        off a revision outside it."""
        level, last = [start], start
        down = self._bits(False)
        for i in range(n):
            if not level:
                raise RangeError(
                    f"{s!r} goes past base: {start} is only {_plural(i, 'step')} above base"
                )
            if len(level) > 1:
                raise MultipleHeadsError(
                    f"{s!r} is ambiguous: {i} step(s) down from {start} there are several heads "
                    f"({', '.join(level)}); step down from one of them by id"
                )
            last = level[0]
            if scope is not None and last not in scope:
                label = s.partition("@")[0]
                raise RangeError(
                    f"{s!r} steps below branch {label}: {start} is only {_plural(i, 'step')} "
                    f"above where the branch leaves {last}; use -N or a revision id"
                )
            parents = list(self._parents[last])
            inside = [p for p in parents if scope is not None and p in scope]
            parents = inside or parents
            # a parent below another parent is not a head of the result
            level = sorted(p for p in parents if not any(
                q != p and down[self._index[q]] >> self._index[p] & 1 for q in parents))
        return level, last

    def resolve(self, spec: str, current_heads: Iterable[str] = ()) -> tuple[str, ...]:
        """The revisions ``spec`` names, sorted; ``()`` is base. Upgrading there applies their
        ancestors. Forms: head, heads, base, current, an id, a unique prefix (>= 4 chars), a
        branch label, label@head, label@heads, label@base (base: ``()``), +N / -N from
        ``current_heads``, rev+N / rev-N (rev any single target), base+N, label@+N / label@-N."""
        return self._parse(spec, self._current(current_heads)).revs

    def resolve_one(self, spec: str, current_heads: Iterable[str] = ()) -> str:
        """Exactly one revision id for ``spec``; base or several revisions are errors."""
        return self._one(spec.strip() if isinstance(spec, str) else spec,
                         self._parse(spec, self._current(current_heads)))

    # ------------------------------------------------------------ plans
    # One plan per direction, both (current heads, target). The target is either a target as
    # the command line names it (a ``str``: head, +2, label@head, REV-1...) or the revision
    # ids to reach (any other iterable).
    def upgrade_plan(self, current_heads: Iterable[str],
                     target: str | Iterable[str]) -> list[str]:
        """What ``upgrade target`` applies from ``current_heads``, parents and dependencies
        first; never a downgrade (revision ids below the current ones give nothing)."""
        current = self._current(current_heads)
        if isinstance(target, str):
            move = self._parse(target, current)
            if move.step == "-":
                raise RangeError(f"'upgrade {target.strip()}' would go down: use "
                                 f"'downgrade {target.strip()}'")
            target = move.revs
        todo = self.ancestors(self._check(target)) - self.applied(current)
        return sorted(todo, key=self._index.__getitem__)

    def downgrade_plan(self, current_heads: Iterable[str],
                       target: str | Iterable[str]) -> list[str]:
        """What ``downgrade target`` un-applies from ``current_heads``, dependents and
        children first. A named target un-applies whatever is applied above it (Alembic's
        rule), so a branch it is not on stays; ``-N``/``label@-N`` step along one head,
        ``label@base`` is that branch from its root. Revision ids are the heads to reach:
        everything applied that is not below them goes."""
        current = self._current(current_heads)
        if not isinstance(target, str):
            applied = self.applied(current)
            heads = self._check(target)
            missing = [t for t in heads if t not in applied]
            if missing:
                raise RangeError(
                    f"target {', '.join(missing)} is not applied; did you mean upgrade?")
            # ancestors() follows dependencies, so whatever depends on a removed revision is
            # outside the kept set and is removed too (before the revision it depends on).
            remove = applied - self.ancestors(heads)
            return sorted(remove, key=self._index.__getitem__, reverse=True)
        s = target.strip()
        move = self._parse(target, current)
        if move.step == "+":
            raise RangeError(f"'downgrade {s}' would go up: use 'upgrade {s}'")
        if not move.step and len(self.maximal(move.revs)) > 1:
            raise MultipleHeadsError(
                f"'downgrade {s}' needs one target and {s!r} names {len(move.revs)} revisions "
                f"({', '.join(move.revs)}); name one of them, or use label@-N"
            )
        applied = self.applied(current)
        missing = [r for r in move.revs if r not in applied]
        if missing:
            raise RangeError(f"target {', '.join(missing)} is not applied; did you mean upgrade?")
        remove = self.descendants(move.drop) & applied if move.drop else set()
        return sorted(remove, key=self._index.__getitem__, reverse=True)

    def stamp_heads(self, specs: Iterable[str], current_heads: Iterable[str], *,
                    purge: bool = False) -> tuple[str, ...]:
        """The version rows after ``stamp specs``: each named revision replaces the heads it
        is an ancestor or descendant of, other branches stay (unless ``purge``); ``base``
        alone empties them and ``label@base`` removes that branch."""
        heads = () if purge else self._current(current_heads)
        specs = [s.strip() for s in specs]
        if not specs:
            raise RevisionNotFoundError("stamp needs a revision: give an id, a label, head or base")
        if all(s == "base" for s in specs):
            return ()
        targets: set[str] = set()
        applied = self.applied(heads)
        for spec in specs:
            if spec == "base":
                continue
            move = self._parse(spec, heads)
            if move.revs:
                targets.update(move.revs)
            else:  # label@base, or a walk down to base: forget what is above it
                applied -= self.descendants(move.drop)
        heads = self.maximal(applied)
        related = self.ancestors(targets) | self.descendants(targets)
        return self.maximal(targets | {h for h in heads if h not in related})

    # ------------------------------------------------------------ version-table rules
    def heads_after_upgrade(self, heads: Iterable[str], rev: str) -> tuple[str, ...]:
        """Heads once ``rev`` is applied: heads below it give way to it, dependencies
        included (Alembic's version rows: [b] once b, which depends on a, is applied)."""
        hs = self._check(heads)
        self.get(rev)
        if self._covered(hs, rev):
            raise RangeError(f"{rev} is already applied at heads {', '.join(hs)}")
        missing = [p for p in self._parents[rev] + self._deps[rev] if not self._covered(hs, p)]
        if missing:
            raise RangeError(f"cannot apply {rev} before {', '.join(missing)}")
        idx, below = self._index, self._bits(True)[self._index[rev]]
        return tuple(sorted([h for h in hs if not below >> idx[h] & 1] + [rev]))

    def heads_after_downgrade(self, heads: Iterable[str], rev: str) -> tuple[str, ...]:
        """Heads once ``rev`` is un-applied: its parents and dependencies become heads unless a
        remaining head already covers them."""
        hs = self._check(heads)
        self.get(rev)
        if rev not in hs:
            raise RangeError(
                f"cannot un-apply {rev}: it is not a current head ({', '.join(hs) or 'base'}); "
                "un-apply what is above it first"
            )
        rest = [h for h in hs if h != rev]
        # highest first, so a parent below another parent is covered by it
        for p in sorted(self._parents[rev] + self._deps[rev], key=self._index.__getitem__,
                        reverse=True):
            if not self._covered(rest, p):
                rest.append(p)
        return tuple(sorted(rest))

    # ------------------------------------------------------------ history
    def walk_range(self, spec: str | None, current_heads: Iterable[str] = ()) -> list[str]:
        """Revisions in ``start:end`` (both inclusive, either side optional), newest first:
        ``start`` and what lies above it along down_revisions, up to ``end`` and what it
        needs. ``start`` must lie below ``end`` (Alembic's rule)."""
        current = self._current(current_heads)
        text = (spec or ":").strip()
        if ":" not in text:
            raise RangeError(
                f"history range {spec!r} must look like start:end (either side may be empty)"
            )
        start, _, end = (part.strip() for part in text.partition(":"))
        starts: tuple[str, ...] = ()
        if start and start != "base":
            if start == "current":
                starts = current
            else:
                move = self._parse(start, current)
                starts = move.revs or tuple(sorted(move.drop))  # label@base: the branch's root
        ends: tuple[str, ...] | None = None
        if end and end != "heads":
            ends = current if end == "current" else self._parse(end, current).revs
        upper = self.ancestors(ends) if ends is not None else None
        if upper is not None:
            stray = [r for r in starts if r not in upper]
            if stray:
                swapped = bool(ends) and all(self.is_ancestor(e, r) for e in ends for r in starts)
                hint = f"did you mean {end}:{start}?" if swapped else "put the older revision first"
                raise RangeError(
                    f"history range {text!r} does not refer to ancestor and descendant revisions: "
                    f"{', '.join(stray)} is not below {', '.join(ends) or 'base'}; {hint}"
                )
        lower = self.descendants(starts, dependencies=False) if starts else None
        return [r for r in reversed(self._order)
                if (lower is None or r in lower) and (upper is None or r in upper)]


def format_rev_line(graph: RevisionGraph, rev_id: str, *, current: frozenset[str] = frozenset(),
                    verbose: bool = False) -> str:
    """Alembic-style history line: ``<down> -> <rev> (head) (current) ..., message``."""
    rev = graph.get(rev_id)
    downs = rev.down_revisions
    down = "<base>" if not downs else downs[0] if len(downs) == 1 else f"({', '.join(downs)})"
    line = f"{down} -> {rev.revision}"
    if not graph.children(rev_id):
        line += " (head)"
    if rev_id in current:
        line += " (current)"
    if graph.is_branch_point(rev_id):
        line += " (branchpoint)"
    if graph.is_merge_point(rev_id):
        line += " (mergepoint)"
    if rev.branch_labels:
        line += f" ({', '.join(sorted(rev.branch_labels))})"
    if rev.message:
        line += f", {rev.message}"
    if not verbose:
        return line
    lines = [line, f"    Revision ID: {rev.revision}",
             f"    Revises: {', '.join(downs) if downs else '<base>'}"]
    if graph.dependencies(rev_id):
        lines.append(f"    Depends on: {', '.join(graph.dependencies(rev_id))}")
    if rev.branch_labels:
        lines.append(f"    Branch names: {', '.join(sorted(rev.branch_labels))}")
    if rev.path:
        lines.append(f"    Path: {rev.path}")
    if rev.create_date:
        lines.append(f"    Create Date: {rev.create_date}")
    if rev.message:
        lines += ["", f"    {rev.message}"]
    return "\n".join(lines)


def normalize_heads(graph: RevisionGraph, heads: tuple[str, ...]) -> tuple[str, ...]:
    """Drop recorded heads that are ancestors of other heads (left by an interrupted move)."""
    known = [h for h in heads if h in graph]
    below: set[str] = set()
    for h in known:
        below |= graph.ancestors([h], inclusive=False)
    return tuple(sorted(h for h in known if h not in below)) + tuple(
        sorted(h for h in heads if h not in graph)
    )
