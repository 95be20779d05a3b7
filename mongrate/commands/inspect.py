"""Reading state: ``current``, ``history``, ``heads``, ``branches``, ``show`` and ``check``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mongrate.config import Config
from mongrate.errors import CheckFailed
from mongrate.graph.revisions import Revision, normalize_heads
from mongrate.graph.scripts import ScriptDirectory, checksum
from mongrate.names import PROBE, SCRATCH, UNDO_SIDE, OwnNames

if TYPE_CHECKING:  # pymongo loads only for the verbs that reach the database
    from mongrate.commands.project import Project
    from mongrate.runtime.lock import LockHolder
    from mongrate.runtime.store import Store


@dataclass
class CurrentState:
    heads: tuple[str, ...]
    revisions: list[Revision]
    unknown: list[str]
    interrupted: list[dict]
    lock: LockHolder | None
    pending: list[str]
    log: dict[str, list[dict]] = field(default_factory=dict)
    running: list[dict] = field(default_factory=list)  # started by the run holding the lock


def holder_alive(store: Store, holder: LockHolder | None) -> bool:
    """Is ``holder``'s run alive? Its lease is live and, when it runs on this host, its
    process exists (a killed run is seen at once, not only when its lease runs out)."""
    if holder is None or holder.expires_at <= store.leases.now():
        return False
    if holder.host == store.leases.host:
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            pass
    return True


def unfinished_steps(store: Store) -> tuple[list[dict], list[dict], LockHolder | None]:
    """Steps logged as started and not finished, split into those of the live run holding
    the lock (running now) and those of dead runs (interrupted), and the lock holder."""
    holder = store.leases.holder()
    live = holder_alive(store, holder)
    running, interrupted = [], []
    for entry in store.interrupted():
        mine = live and entry.get("owner") == holder.owner  # type: ignore[union-attr]
        (running if mine else interrupted).append(entry)
    return running, interrupted, holder


def current(project: Project, *, verbose: bool = False) -> CurrentState:
    graph = project.graph
    raw = project.store.heads()
    heads = normalize_heads(graph, raw)
    known = [h for h in heads if h in graph]
    unknown = [h for h in heads if h not in graph]
    pending = graph.upgrade_plan(known, graph.heads) if not unknown else []
    running, interrupted, holder = unfinished_steps(project.store)
    state = CurrentState(heads, [graph.get(h) for h in known], unknown, interrupted, holder,
                         pending, running=running)
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
    """Everything that needs attention, one reason a line; raises CheckFailed if any.

    With a declared schema (``schema`` in the config), a database at the head is also
    compared with it: one line per missing, extra or changed index, validator or option.
    """
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
            if last:
                problems.extend(_written_during(rev_id, last.get("results") or {}))
        if project.config.schema is not None and not pending:
            # behind the head, the pending revisions are the difference to act on first
            from mongrate.commands.drift import drift_lines

            problems.extend(drift_lines(project))
    for entry in store.last_failures():
        problems.append(
            f"the last {entry['direction']} of {entry['revision']} failed "
            f"({entry.get('error') or 'no error text'}): fix it and run the {entry['direction']} again"
        )
    running, interrupted, _ = unfinished_steps(store)
    for entry in running:
        problems.append(
            f"{entry['direction']} of {entry['revision']} is running (started "
            f"{entry['started_at']:%Y-%m-%d %H:%M:%S} UTC by {entry.get('host')} pid "
            f"{entry.get('pid')}, which holds the lock): wait for it to finish"
        )
    for entry in interrupted:
        problems.append(
            f"{entry['direction']} of {entry['revision']} was interrupted "
            f"(started {entry['started_at']:%Y-%m-%d %H:%M:%S} UTC by {entry.get('host')} "
            f"pid {entry.get('pid')}): run 'mongrate {entry['direction']}' to resume it"
        )
    if not unknown:
        problems += leftovers(project, graph.applied(heads))
    if problems:
        raise CheckFailed("; ".join(problems), problems)
    return problems


#: words of the results a pass logs about the application's writes during it
_LEFT = ("left as the application wrote them", "unsure, left as the application wrote them")
_WRITTEN = "written by the application during the pass"


def _written_during(rev_id: str, results: dict) -> list[str]:
    """A revision's documents that the application wrote during its pass and that stay
    unmigrated (left as the application wrote them), with how many it wrote."""
    left = sum(int(v) for k, v in results.items() if any(k.endswith(w) for w in _LEFT))
    if not left:
        return []
    written = sum(int(v) for k, v in results.items() if k.endswith(_WRITTEN))
    return [f"{rev_id}: {left} document(s) the application wrote during its pass are left "
            f"as it wrote them, not migrated ({written} written during the pass in all; "
            f"'mongrate history -v -r {rev_id}:{rev_id}' says where): downgrade it and upgrade "
            "again"]


def leftovers(project: Project, applied: set[str]) -> list[str]:
    """mongrate's own collections that no applied revision accounts for: recorded changes
    of a revision that is not applied (its upgrade failed or was interrupted, or they
    outlived it), and scratch copies of a pass that did not finish."""
    store, graph = project.store, project.graph
    running = holder_alive(store, store.leases.holder())
    out = []
    live = set(store.db.list_collection_names())
    own = OwnNames.of(project.config)
    for name in sorted(live):
        owned = own.classify(name)
        if owned is None:
            continue
        if owned.kind == UNDO_SIDE:
            rev = owned.revision
            if rev not in graph:
                out.append(f"{name} holds recorded changes of a revision no file defines: "
                           "restore the file (then 'mongrate downgrade' can use them) or drop it")
            elif rev not in applied:
                out.append(f"{name} holds changes {rev} recorded, but {rev} is not applied "
                           f"(its upgrade failed or was interrupted): 'mongrate upgrade' "
                           f"finishes it, 'mongrate downgrade' reverts them")
        elif owned.kind == PROBE and not running:
            out.append(f"{name} is a write-strategy probe left by a run that stopped: drop it")
        elif owned.kind == SCRATCH and not running:
            state = store.undo.find_one({"tmp": name, "state": {"$in": ["built", "copying"]}})
            if state and state["collection"] not in live:
                out.append(f"{name} may be the only copy of {state['collection']} (a swap was "
                           "cut short): do not drop it; 'mongrate upgrade' finishes the swap")
            else:
                out.append(f"{name} is a scratch copy left by a run that stopped part way (no "
                           "run holds the lock): the next run of its revision replaces it")
    return out


def log_summary(entry: dict[str, Any]) -> str:
    dur = f"{entry['duration']:.2f}s" if entry.get("duration") is not None else "-"
    err = f" error: {entry['error']}" if entry.get("error") else ""
    return (f"{entry['started_at']:%Y-%m-%d %H:%M:%S} {entry['direction']:<9} "
            f"{entry['status']:<11} {dur:>8} {entry.get('host')}:{entry.get('pid')}{err}")


def heads(config: Config, scripts: ScriptDirectory | None = None) -> list[Revision]:
    """The head revisions of the revision files (no database needed)."""
    graph = (scripts or ScriptDirectory(config)).graph
    return [graph.get(h) for h in graph.heads]


def branches(config: Config, scripts: ScriptDirectory | None = None,
             ) -> list[tuple[Revision, list[Revision]]]:
    """Each branch point with the revisions that leave it."""
    graph = (scripts or ScriptDirectory(config)).graph
    return [(rev, [graph.get(c) for c in graph.children(rev.revision)])
            for rev in graph if graph.is_branch_point(rev.revision)]


def show(config: Config, rev: str, scripts: ScriptDirectory | None = None) -> Revision:
    """One revision, named any way a target may name it."""
    graph = (scripts or ScriptDirectory(config)).graph
    return graph.get(graph.resolve_one(rev))
