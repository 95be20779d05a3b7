"""The verbs as plain functions: every CLI command is also a Python API call.

Each builds a plan from the revision graph and the database state, then runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mongrate.config import Config
from mongrate.errors import CheckFailed, ConfigError, MultipleHeadsError, RangeError
from mongrate.progress import Reporter
from mongrate.revisions import Revision, RevisionGraph
from mongrate.runner import Runner, RunResult, normalize_heads
from mongrate.scripts import ScriptDirectory, checksum
from mongrate.store import LockHolder, Store, connect

INI_TEMPLATE = """\
[mongrate]
# Server and database. ${{VAR}} reads the environment; a database named in the URL path wins.
url = {url}
database = {database}
# Where revision files live (relative to this file).
script_location = {scripts}
# New revision file names: %%(rev)s, %%(slug)s, %%(year)d, %%(month).2d, %%(day).2d ...
file_template = %%(rev)s_%%(slug)s
# Folders put on sys.path before revisions are imported.
prepend_sys_path = .
# Collections mongrate owns.
version_collection = mongrate_version
log_collection = mongrate_log
lock_collection = mongrate_lock
undo_collection = mongrate_undo
backups_collection = mongrate_backups
# Lease of the migration lock; a live run renews it every third of this.
lock_lease_seconds = 30
# Documents per batch for op helpers.
batch_size = 1000
"""


class Project:
    """Scripts and (lazily) the database of one configured project."""

    def __init__(self, config: Config, reporter: Reporter | None = None):
        self.config = config
        self.reporter = reporter or Reporter()
        self.scripts = ScriptDirectory(config)
        self._store: Store | None = None
        self._client = None

    @property
    def graph(self) -> RevisionGraph:
        return self.scripts.graph

    @property
    def store(self) -> Store:
        if self._store is None:
            self._client, db = connect(self.config)
            self._store = Store(db, self.config)
        return self._store

    def current_heads(self) -> tuple[str, ...]:
        return normalize_heads(self.graph, self.store.heads())

    def runner(self, lock_timeout: float, command: str) -> Runner:
        return Runner(self.config, self.scripts, self.store, reporter=self.reporter,
                      lock_timeout=lock_timeout, command=command)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _maximal(graph: RevisionGraph, revs: Iterable[str]) -> tuple[str, ...]:
    """The members of ``revs`` that are not ancestors of other members."""
    revs = set(revs)
    below: set[str] = set()
    for r in revs:
        below |= graph.ancestors([r], inclusive=False)
    return tuple(sorted(revs - below))


# ------------------------------------------------------------------ scaffolding
def init(directory: str | Path, *, url: str = "mongodb://127.0.0.1:27017/",
         database: str = "app", scripts: str = "versions") -> list[Path]:
    """Create ``mongrate.ini`` and an empty revisions folder in ``directory``."""
    directory = Path(directory)
    ini = directory / "mongrate.ini"
    if ini.exists():
        raise ConfigError(f"{ini} already exists; remove it or init another directory")
    (directory / scripts).mkdir(parents=True, exist_ok=True)
    ini.write_text(INI_TEMPLATE.format(url=url, database=database, scripts=scripts), encoding="utf-8")
    readme = directory / scripts / "README"
    if not readme.exists():
        readme.write_text("Revision files for mongrate: 'mongrate revision -m MESSAGE' adds one.\n")
    return [ini, directory / scripts]


def revision(config: Config, message: str, *, head: str = "head", splice: bool = False,
             branch_label: str | None = None, depends_on: Sequence[str] = (),
             rev_id: str | None = None) -> Path:
    """Write a new revision file on top of ``head`` (Alembic's ``--head`` rules)."""
    scripts = ScriptDirectory(config)
    graph = scripts.graph
    if not message.strip():
        raise ConfigError("a revision needs a message: -m 'what it does'")
    if head == "base":
        parents: tuple[str, ...] = ()
    elif len(graph) == 0:
        if head not in ("head", "heads"):
            raise RangeError(f"there are no revisions yet, so --head {head} names nothing")
        parents = ()
    else:
        if head == "head" and len(graph.heads) > 1:
            raise MultipleHeadsError(
                f"several heads ({', '.join(graph.heads)}): pass --head REV or label@head, "
                "or join them first with 'mongrate merge heads -m MSG'"
            )
        parent = graph.resolve_one(head)
        if parent not in graph.heads and not splice:
            raise RangeError(
                f"{parent} is not a head; pass --splice to start a new branch from it"
            )
        parents = (parent,)
    deps = tuple(graph.resolve_one(d) for d in depends_on)
    return scripts.write_revision(message, down_revisions=parents, rev_id=rev_id,
                                  branch_labels=(branch_label,) if branch_label else (),
                                  depends_on=deps)


def merge(config: Config, revisions: Sequence[str], message: str, *,
          branch_label: str | None = None, rev_id: str | None = None) -> Path:
    """Write a merge revision joining ``revisions`` (e.g. ``heads``)."""
    scripts = ScriptDirectory(config)
    graph = scripts.graph
    parents: list[str] = []
    for spec in revisions or ["heads"]:
        parents.extend(graph.resolve(spec))
    parents = sorted(set(parents))
    if len(parents) < 2:
        raise RangeError(f"nothing to merge: {', '.join(revisions) or 'heads'} is one revision")
    return scripts.write_revision(message, down_revisions=tuple(parents), rev_id=rev_id,
                                  branch_labels=(branch_label,) if branch_label else ())


# ------------------------------------------------------------------- migrating
def upgrade(project: Project, target: str = "head", *, dry_run: bool = False,
            lock_timeout: float = 60.0) -> RunResult:
    graph = project.graph

    def plan(heads: tuple[str, ...]) -> list[str]:
        return graph.upgrade_plan(heads, graph.resolve(target, heads))

    return project.runner(lock_timeout, f"upgrade {target}").run("upgrade", plan, dry_run=dry_run)


def downgrade(project: Project, target: str, *, dry_run: bool = False,
              lock_timeout: float = 60.0) -> RunResult:
    graph = project.graph

    def plan(heads: tuple[str, ...]) -> list[str]:
        return graph.downgrade_plan(heads, graph.downgrade_heads(target, heads))

    return project.runner(lock_timeout, f"downgrade {target}").run("downgrade", plan, dry_run=dry_run)


def stamp(project: Project, revisions: Sequence[str], *, purge: bool = False,
          lock_timeout: float = 60.0) -> tuple[str, ...]:
    """Set the version collection to ``revisions`` without running anything.

    Heads on other branches stay unless ``purge``; ``stamp base`` empties the collection.
    Heads that no revision file defines are dropped (and said so).
    """
    from mongrate.runner import Lock

    graph = project.graph
    store = project.store

    def new_heads() -> tuple[tuple[str, ...], list[str]]:
        raw = store.heads()
        unknown = [h for h in raw if h not in graph]
        heads = () if purge else normalize_heads(graph, tuple(h for h in raw if h in graph))
        specs = [r for r in revisions if r.strip() != "base"]
        if len(specs) < len(revisions) and not specs:
            return (), unknown
        targets: set[str] = set()
        for spec in specs:
            targets.update(graph.resolve(spec, heads))
        related = graph.ancestors(targets) | graph.descendants(targets)
        keep = {h for h in heads if h not in related}
        return _maximal(graph, targets | keep), unknown

    new_heads()  # bad input fails here, before the lock writes anything
    with Lock(store, lease=project.config.lock_lease_seconds, timeout=lock_timeout,
              command="stamp", reporter=project.reporter):
        new, unknown = new_heads()
        for u in unknown:
            project.reporter.info(f"dropping head {u}: no revision file defines it")
        old = store.heads()
        store.move_heads(old, new)
        log_id, started = store.log_start(",".join(new) or "base", "stamp", checksum=None,
                                          run_id="stamp")
        store.log_finish(log_id, "succeeded", started_at=started,
                         extra={"heads_before": list(old), "heads_after": list(new)})
        return new


def unlock(project: Project, *, force: bool = False) -> LockHolder | None:
    """Release a lock whose lease expired (or any lock with ``force``)."""
    store = project.store
    holder = store.holder()
    if holder is None:
        return None
    if holder.expires_at > store.now() and not force:
        raise CheckFailed(
            f"the lock is held by {holder.describe()} and its lease is live; "
            "pass --force only if that run is dead"
        )
    return holder if store.force_release(holder) else None


# --------------------------------------------------------------------- reading
@dataclass
class CurrentState:
    heads: tuple[str, ...]
    revisions: list[Revision]
    unknown: list[str]
    interrupted: list[dict]
    lock: LockHolder | None
    pending: list[str]
    log: dict[str, list[dict]] = field(default_factory=dict)


def current(project: Project, *, verbose: bool = False) -> CurrentState:
    graph = project.graph
    raw = project.store.heads()
    heads = normalize_heads(graph, raw)
    known = [h for h in heads if h in graph]
    unknown = [h for h in heads if h not in graph]
    pending = graph.upgrade_plan(known, graph.heads) if not unknown else []
    state = CurrentState(heads, [graph.get(h) for h in known], unknown,
                         project.store.interrupted(), project.store.holder(), pending)
    if verbose:
        state.log = project.store.log_entries(heads)
    return state


def history(project: Project, rev_range: str | None = None, *,
            indicate_current: bool = False) -> tuple[list[str], set[str]]:
    """Revision ids newest first, and the current heads when asked for (or needed)."""
    graph = project.graph
    needs_db = indicate_current or (rev_range is not None and "current" in rev_range)
    heads = project.current_heads() if needs_db else ()
    return graph.walk_range(rev_range, heads), set(heads)


def check(project: Project) -> list[str]:
    """Everything that needs attention, one reason a line; raises CheckFailed if any."""
    graph = project.graph
    problems: list[str] = []
    if len(graph.heads) > 1:
        problems.append(
            f"the revisions have {len(graph.heads)} heads ({', '.join(graph.heads)}): "
            "join them with 'mongrate merge heads -m MSG'"
        )
    store = project.store
    heads = normalize_heads(graph, store.heads())
    unknown = [h for h in heads if h not in graph]
    if unknown:
        problems.append(
            f"the database is at {', '.join(unknown)}, which no revision file defines: "
            "restore the file, or 'mongrate stamp --purge REV' to record the right revision"
        )
    else:
        pending = graph.upgrade_plan(heads, graph.heads)
        if pending:
            problems.append(f"{len(pending)} revision(s) not applied ({', '.join(pending)}): "
                            "run 'mongrate upgrade heads'")
        applied = sorted(graph.applied(heads))
        successes = store.last_successes(applied)
        for rev_id in applied:
            last = successes.get(rev_id)
            rev = graph.get(rev_id)
            if last and last.get("checksum") and last["checksum"] != checksum(rev.path):
                problems.append(
                    f"{rev.path} changed since revision {rev_id} ran at "
                    f"{last['started_at']:%Y-%m-%d %H:%M:%S} UTC: write a new revision instead"
                )
    for entry in store.last_failures():
        problems.append(
            f"the last {entry['direction']} of {entry['revision']} failed "
            f"({entry.get('error') or 'no error text'}): fix it and run the {entry['direction']} again"
        )
    for entry in store.interrupted():
        problems.append(
            f"{entry['direction']} of {entry['revision']} was interrupted "
            f"(started {entry['started_at']:%Y-%m-%d %H:%M:%S} UTC by {entry.get('host')} "
            f"pid {entry.get('pid')}): run 'mongrate upgrade' to resume it"
        )
    if problems:
        exc = CheckFailed("; ".join(problems))
        exc.problems = problems
        raise exc
    return problems


def log_summary(entry: dict[str, Any]) -> str:
    dur = f"{entry['duration']:.2f}s" if entry.get("duration") is not None else "-"
    err = f" error: {entry['error']}" if entry.get("error") else ""
    return (f"{entry['started_at']:%Y-%m-%d %H:%M:%S} {entry['direction']:<9} "
            f"{entry['status']:<11} {dur:>8} {entry.get('host')}:{entry.get('pid')}{err}")
