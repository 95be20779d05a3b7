"""Differential test: the same random revision graphs and commands through Alembic and mongrate.

What is compared, per command: success or failure, which revisions ran in which direction and
in what order, and the version rows afterwards. Both tools start every command from the same
rows; after a disagreement both are reset to the same rows so one difference does not cascade.

Layers. Alembic runs for real: its command API (``upgrade``/``downgrade``/``stamp``) against a
SQLite database in ``tmp_path``, with a generated ``env.py`` and revision files whose
``upgrade()``/``downgrade()`` append to a ``trace`` table that is read back after each command.
mongrate runs, in ``test_matches_alembic``, the pure layer the runner executes:
``RevisionGraph.upgrade_plan``/``downgrade_plan``/``stamp_heads`` (exactly what
``mongrate.commands`` hands the runner) and, per step, ``heads_after_upgrade``/
``heads_after_downgrade`` (exactly how the runner moves the version collection). The lock, the
log and the Mongo writes are not on that path, so ``test_matches_alembic_through_ferretdb``
replays whole seeds through ``mongrate.commands`` against FerretDB, with revisions that append
to a collection, and holds it to the same comparison.

Disagreements are accepted only when an entry of ``alembic_differences.DIFFERENCES`` explains
them; that list is also README's "Where mongrate differs from Alembic".
"""

from __future__ import annotations

import random
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mongrate.errors import MongrateError
from mongrate.graph.revisions import Revision, RevisionGraph
from tests.engine.alembic_differences import DIFFERENCES, Case, Outcome

ROOT = Path(__file__).resolve().parents[2]
HEX = "0123456789abcdef"
DEFAULT_SEEDS = range(80)
#: every fourth of seeds 80-999: 230 graphs, a quarter of the 920 this replayed (four
#: minutes of `make test` for the rest), and each difference still shows in them (the rarest,
#: step-off-merge, in 3 of the 920: seeds 480 and 908 are here). A change to the generator
#: that leaves one unseen fails below: look for it in range(80, 1000) before dropping it.
SLOW_SEEDS = range(80, 1000, 4)
STEPS = 12
LESS_OFTEN = {"upgrade": {"-N", "label@-N", "base", "label@base"},
              "downgrade": {"+N", "label@+N", "heads", "label@heads"}}

ENV_PY = '''\
from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
'''

Spec = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # id, down, deps, labels


# ---------------------------------------------------------------- random graphs and commands
def random_graph(rng: random.Random) -> list[Spec]:
    """Chains, branches, merges, several bases, labels, depends_on and ids sharing prefixes."""
    specs: list[Spec] = []
    below: dict[str, set[str]] = {}  # ancestors along down_revisions, inclusive
    for i in range(rng.randint(3, 11)):
        taken = [s[0] for s in specs]
        while True:
            if taken and rng.random() < 0.3:  # share a 4-5 character prefix with an earlier id
                prefix = rng.choice(taken)[:rng.choice((4, 5))]
            else:
                prefix = ""
            rid = prefix + "".join(rng.choice(HEX) for _ in range(8 - len(prefix)))
            if rid not in taken:
                break
        roll = rng.random()
        if not taken or roll < 0.15:
            down: tuple[str, ...] = ()
        elif roll < 0.35 and len(taken) >= 2:
            a, b = rng.sample(taken, 2)
            down = (a,) if a in below[b] or b in below[a] else (a, b)
        else:
            down = (rng.choice(taken),)
        anc = set().union(*(below[d] for d in down))
        deps: tuple[str, ...] = ()
        if taken and rng.random() < 0.25:
            choices = [t for t in taken if t not in anc]
            if choices:
                dep = rng.choice(choices)
                label = next((s[3][0] for s in specs if s[0] == dep and s[3]), None)
                deps = (label if label and rng.random() < 0.3 else dep,)  # by label sometimes
        labels = (f"lab{i}",) if rng.random() < 0.3 else ()
        below[rid] = anc | {rid}
        specs.append((rid, down, deps, labels))
    return specs


def target_forms(specs: list[Spec]) -> dict[str, Callable[[random.Random, list[str]], str]]:
    """Every target form README lists, each a generator of one target string given the ids
    worth naming (mostly applied ones for a downgrade, unapplied ones for an upgrade)."""
    ids = [s[0] for s in specs]
    labels = [s[3][0] for s in specs if s[3]]

    def pick(rng: random.Random, likely: list[str]) -> str:
        return rng.choice(likely if likely and rng.random() < 0.7 else ids)

    def rev(rng: random.Random, likely: list[str]) -> str:
        rid = pick(rng, likely)
        return rng.choice((rid, rid[:rng.randint(4, 7)], *(labels and [rng.choice(labels)])))

    def n(rng: random.Random) -> int:
        return rng.choice((1, 1, 2, 3))

    forms: dict[str, Callable[[random.Random, list[str]], str]] = {
        "head": lambda r, ok: "head",
        "heads": lambda r, ok: "heads",
        "base": lambda r, ok: "base",
        "id": lambda r, ok: pick(r, ok),
        "prefix": lambda r, ok: pick(r, ok)[:r.randint(4, 7)],
        "+N": lambda r, ok: f"+{n(r)}",
        "-N": lambda r, ok: f"-{n(r)}",
        "REV+N": lambda r, ok: f"{rev(r, ok)}+{n(r)}",
        "REV-N": lambda r, ok: f"{rev(r, ok)}-{n(r)}",
        "head-N": lambda r, ok: f"head-{n(r)}",
        "base+N": lambda r, ok: f"base+{n(r)}",
    }
    if labels:
        forms |= {
            "label": lambda r, ok: r.choice(labels),
            "label@head": lambda r, ok: f"{r.choice(labels)}@head",
            "label@heads": lambda r, ok: f"{r.choice(labels)}@heads",
            "label@base": lambda r, ok: f"{r.choice(labels)}@base",
            "label@+N": lambda r, ok: f"{r.choice(labels)}@+{n(r)}",
            "label@-N": lambda r, ok: f"{r.choice(labels)}@-{n(r)}",
        }
    return forms


def random_command(rng: random.Random, forms: dict, graph: RevisionGraph,
                   heads: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[str, ...], bool]:
    verb = rng.choice(("upgrade", "upgrade", "downgrade", "downgrade", "stamp"))
    applied = graph.applied(heads)
    likely = sorted(applied if verb == "downgrade" else {r.revision for r in graph} - applied)
    count = 2 if verb == "stamp" and rng.random() < 0.2 else 1
    # every form is tried with every verb, the ones that cannot do anything less often
    weights = [1 if f in LESS_OFTEN.get(verb, ()) else 3 for f in sorted(forms)]
    chosen = tuple(rng.choices(sorted(forms), weights)[0] for _ in range(count))
    targets = tuple(forms[f](rng, likely) for f in chosen)
    return verb, chosen, targets, verb == "stamp" and rng.random() < 0.15


# ---------------------------------------------------------------- Alembic
def _literal(values: tuple[str, ...]) -> str:
    return "None" if not values else repr(values[0]) if len(values) == 1 else repr(values)


class AlembicSide:
    """An Alembic environment on SQLite whose revisions record what they run."""

    def __init__(self, root: Path, specs: list[Spec]):
        from alembic.config import Config
        from sqlalchemy import create_engine, event, text

        self.text = text
        (root / "versions").mkdir(parents=True)
        (root / "env.py").write_text(ENV_PY)
        for rid, down, deps, labels in specs:
            body = "op.execute(\"INSERT INTO trace (rev, dir) VALUES ('{}', '{}')\")"
            (root / "versions" / f"{rid}_r.py").write_text(
                f"from alembic import op\n\nrevision = {rid!r}\ndown_revision = {_literal(down)}\n"
                f"branch_labels = {_literal(labels)}\ndepends_on = {_literal(deps)}\n\n\n"
                f"def upgrade():\n    {body.format(rid, 'up')}\n\n\n"
                f"def downgrade():\n    {body.format(rid, 'down')}\n")
        self.engine = create_engine(f"sqlite:///{root / 'alembic.db'}")
        # no fsync per commit: the file only has to outlive this test
        event.listen(self.engine, "connect",
                     lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
        with self.engine.begin() as conn:
            conn.execute(text("CREATE TABLE trace (id INTEGER PRIMARY KEY, rev TEXT, dir TEXT)"))
        self.config = Config()
        self.config.set_main_option("script_location", str(root))

    def run(self, verb: str, targets: tuple[str, ...], purge: bool) -> Outcome:
        from alembic import command

        error = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "downgrade -1 from multiple heads is ambiguous"
            try:
                with self.engine.begin() as conn:  # one transaction: a failure changes nothing
                    self.config.attributes["connection"] = conn
                    if verb == "stamp":
                        command.stamp(self.config, list(targets), purge=purge)
                    else:
                        getattr(command, verb)(self.config, targets[0])
            except Exception as exc:  # noqa: BLE001 - every failure of Alembic's is an outcome
                error = f"{type(exc).__name__}: {exc}"
        with self.engine.begin() as conn:
            ran = tuple(tuple(r) for r in conn.execute(self.text(
                "SELECT rev, dir FROM trace ORDER BY id")))
            conn.execute(self.text("DELETE FROM trace"))
        return Outcome(not error, ran if not error else (), self.rows(), error)

    def rows(self) -> tuple[str, ...]:
        with self.engine.begin() as conn:
            try:
                found = conn.execute(self.text("SELECT version_num FROM alembic_version"))
            except Exception:  # noqa: BLE001 - no table yet: no rows
                return ()
            return tuple(sorted(r[0] for r in found))

    def set_rows(self, rows: tuple[str, ...]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.text(
                "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
            conn.execute(self.text("DELETE FROM alembic_version"))
            for r in rows:
                conn.execute(self.text("INSERT INTO alembic_version VALUES (:r)"), {"r": r})


# ---------------------------------------------------------------- mongrate
def graph_of(specs: list[Spec]) -> RevisionGraph:
    return RevisionGraph(Revision(rid, down, deps, frozenset(labels))
                         for rid, down, deps, labels in specs)


class PureSide:
    """mongrate's planning and version-row rules, as the runner applies them."""

    def __init__(self, graph: RevisionGraph):
        self.graph = graph
        self.heads: tuple[str, ...] = ()

    def run(self, verb: str, targets: tuple[str, ...], purge: bool) -> Outcome:
        g, heads, ran = self.graph, self.heads, []
        try:
            if verb == "upgrade":
                for rid in g.upgrade_plan(heads, targets[0]):
                    heads = g.heads_after_upgrade(heads, rid)
                    ran.append((rid, "up"))
            elif verb == "downgrade":
                for rid in g.downgrade_plan(heads, targets[0]):
                    heads = g.heads_after_downgrade(heads, rid)
                    ran.append((rid, "down"))
            else:
                heads = g.stamp_heads(targets, heads, purge=purge)
        except MongrateError as exc:
            return Outcome(False, (), self.heads, f"{type(exc).__name__}: {exc}")
        self.heads = tuple(sorted(heads))
        return Outcome(True, tuple(ran), self.heads)

    def set_rows(self, rows: tuple[str, ...]) -> None:
        self.heads = rows


class FerretSide:
    """mongrate.commands against FerretDB: lock, log, runner and version collection."""

    def __init__(self, root: Path, specs: list[Spec], url: str, db):
        from mongrate.commands import Project
        from mongrate.config import Config
        from mongrate.progress import Reporter

        versions = root / "versions"
        versions.mkdir(parents=True)
        for rid, down, deps, labels in specs:
            body = 'op.db["trace"].insert_one({{"rev": "{}", "dir": "{}"}})'
            (versions / f"{rid}_r.py").write_text(
                f"revision = {rid!r}\ndown_revision = {_literal(down)}\n"
                f"branch_labels = {_literal(labels)}\ndepends_on = {_literal(deps)}\n\n\n"
                f"def upgrade(op):\n    {body.format(rid, 'up')}\n\n\n"
                f"def downgrade(op):\n    {body.format(rid, 'down')}\n")
        config = Config(url=url, script_location=versions, lock_lease_seconds=5.0)
        self.project = Project(config, Reporter(quiet=True))
        self.db = db
        self.graph = self.project.graph

    def run(self, verb: str, targets: tuple[str, ...], purge: bool) -> Outcome:
        from mongrate import commands

        before = self.project.current_heads()
        try:
            if verb == "stamp":
                commands.stamp(self.project, targets, purge=purge, lock_timeout=5)
                steps: tuple = ()
            else:
                result = getattr(commands, verb)(self.project, targets[0], lock_timeout=5)
                way = "up" if verb == "upgrade" else "down"
                steps = tuple((s.revision, way) for s in result.steps)
        except MongrateError as exc:
            assert self.project.current_heads() == before, "a refused command moved the heads"
            return Outcome(False, (), before, f"{type(exc).__name__}: {exc}")
        traced = tuple((d["rev"], d["dir"]) for d in self.db["trace"].find().sort("_id", 1))
        self.db["trace"].delete_many({})
        assert traced == steps, f"the runner reported {steps} but the revisions ran {traced}"
        return Outcome(True, traced, tuple(sorted(self.project.store.heads())))

    def set_rows(self, rows: tuple[str, ...]) -> None:
        self.project.store.set_heads(rows)


# ---------------------------------------------------------------- comparing
def valid_order(graph: RevisionGraph, ran: tuple[tuple[str, str], ...]) -> bool:
    """Every step after what it needs: parents and dependencies first on the way up, last on
    the way down."""
    pending = {r for r, _ in ran}
    for rid, direction in ran:
        pending.discard(rid)
        if direction == "up":
            first = set(graph.get(rid).down_revisions) | set(graph.dependencies(rid))
        else:
            first = graph.descendants([rid], inclusive=False)
        if first & pending:
            return False
    return True


@dataclass
class Tally:
    failures: list[str] = field(default_factory=list)
    used: Counter = field(default_factory=Counter)  # difference key -> cases it explained
    agreed: int = 0  # commands both tools ran alike
    steps: int = 0  # revisions mongrate ran

    def __iadd__(self, other: Tally) -> Tally:
        self.failures += other.failures
        self.used.update(other.used)
        self.agreed += other.agreed
        self.steps += other.steps
        return self


def replay(seed: int, root: Path, make_side: Callable[[list[Spec]], object],
           steps: int = STEPS) -> Tally:
    """Run one seed's graph and commands through both tools."""
    rng = random.Random(seed)
    specs = random_graph(rng)
    graph = graph_of(specs)
    labels = {s[3][0]: s[0] for s in specs if s[3]}
    forms = target_forms(specs)
    alembic = AlembicSide(root / "alembic", specs)
    ours = make_side(specs)
    tally = Tally()
    for step in range(steps):
        heads = ours.heads if isinstance(ours, PureSide) else ours.project.current_heads()
        verb, chosen, targets, purge = random_command(rng, forms, graph, heads)
        a = alembic.run(verb, targets, purge)
        m = ours.run(verb, targets, purge)
        assert m.ok or m.rows == heads, f"seed {seed}: a refused {verb} moved the rows"
        assert valid_order(graph, m.ran), f"seed {seed}: mongrate ran {m.ran} out of order"
        tally.steps += len(m.ran)
        if a.ok == m.ok and a.ran == m.ran and a.rows == m.rows:
            tally.agreed += 1
            continue
        case = Case(graph, verb, chosen, targets, heads, purge, a, m, labels)
        keys = [d.key for d in DIFFERENCES if d.applies and d.applies(case)]
        tally.used.update(keys)
        if not keys:
            tally.failures.append(
                f"seed {seed} step {step}: {verb} {' '.join(targets)}{' --purge' if purge else ''}"
                f" ({', '.join(chosen)}) from rows {list(heads)}\n"
                f"  graph: {specs}\n  alembic:  {a}\n  mongrate: {m}")
        rows = graph.maximal(a.rows)  # continue both from the same rows
        alembic.set_rows(rows)
        ours.set_rows(rows)
    alembic.engine.dispose()
    return tally


def pure(specs: list[Spec]) -> PureSide:
    return PureSide(graph_of(specs))


def test_matches_alembic(tmp_path):
    tally = Tally()
    for seed in DEFAULT_SEEDS:
        tally += replay(seed, tmp_path / str(seed), pure)
    assert not tally.failures, "unexplained disagreements:\n" + "\n".join(tally.failures[:5])
    # the random commands must mostly do something, or agreeing would prove little
    assert tally.agreed > len(DEFAULT_SEEDS) * STEPS // 2 and tally.steps > len(DEFAULT_SEEDS) * 6, tally


@pytest.mark.slow
def test_matches_alembic_many_seeds_and_every_difference_shows(tmp_path):
    tally = Tally()
    for seed in SLOW_SEEDS:
        tally += replay(seed, tmp_path / str(seed), pure)
    assert not tally.failures, "unexplained disagreements:\n" + "\n".join(tally.failures[:5])
    # an entry no random case needs any more is stale: drop it from the list and the README
    unused = {d.key for d in DIFFERENCES if d.applies} - set(tally.used)
    assert not unused, f"differences never seen: {sorted(unused)}"


@pytest.mark.parametrize("seed", [11, 17])  # rich seeds: merges, depends_on, labels
def test_matches_alembic_through_ferretdb(tmp_path, mongo_url, mongo_db, seed):
    sides: list[FerretSide] = []

    def make(specs: list[Spec]) -> FerretSide:
        sides.append(FerretSide(tmp_path / "mongrate", specs, mongo_url, mongo_db))
        return sides[-1]

    try:
        tally = replay(seed, tmp_path, make)
    finally:
        for side in sides:
            side.project.close()
    assert not tally.failures, "unexplained disagreements:\n" + "\n".join(tally.failures)
    assert tally.steps >= 10, tally


def test_readme_lists_exactly_these_differences():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Where mongrate differs from Alembic\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README has no section 'Where mongrate differs from Alembic'"
    listed = [ln for ln in m.group(1).splitlines() if ln.startswith("- ")]
    assert listed == [d.readme_line() for d in DIFFERENCES]


def test_every_target_form_in_the_readme_is_generated():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"^### Targets\n(.*?)\n\n(.*?)\n\n", text, re.M | re.S).group(2)
    shown = {code for row in table.splitlines()[2:] for code in re.findall(
        r"`([^`]+)`", row.split("|")[1])}
    forms = {re.sub(r"^[0-9a-f]{12}$", "id", re.sub(r"^[0-9a-f]{4}$", "prefix",
                                                     code.replace("images", "label")))
             for code in shown}
    specs = [("aaaa0001", (), (), ("lab0",))]
    assert forms == set(target_forms(specs)), forms ^ set(target_forms(specs))
