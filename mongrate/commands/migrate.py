"""Changing the database: ``upgrade``, ``downgrade``, ``stamp`` and ``unlock``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mongrate.commands.project import Project
from mongrate.config import DEFAULT_LOCK_TIMEOUT, redact
from mongrate.errors import CheckFailed, ServerLost
from mongrate.runtime.lock import Lock, LockHolder
from mongrate.runtime.runner import RunResult, normalize_heads


@contextmanager
def server_guard(project: Project, command: str) -> Iterator[None]:
    """The server going away mid-run becomes one line: which server, what state the run was
    left in, how the next run resumes it (pymongo's own error is a topology dump)."""
    from pymongo.errors import ConnectionFailure as Lost

    try:
        yield
    except Lost as exc:
        url = redact(project.config.url or "")
        lease = project.config.lock_lease_seconds
        raise ServerLost(
            f"lost the server at {url} during '{command}' ({type(exc).__name__}): revisions that "
            "finished are recorded, and the one that was running is left 'started' in the log "
            f"('mongrate current' names it); once the server is back, 'mongrate {command}' "
            f"resumes it after our lock's lease ({lease:g}s) expires"
        ) from exc


def upgrade(project: Project, target: str = "head", *, dry_run: bool = False,
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> RunResult:
    """Apply revisions up to ``target`` (Alembic's meaning of it)."""
    return _migrate(project, "upgrade", target, dry_run, lock_timeout)


def downgrade(project: Project, target: str, *, dry_run: bool = False,
              lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> RunResult:
    """Reverse revisions down to ``target``."""
    return _migrate(project, "downgrade", target, dry_run, lock_timeout)


def _migrate(project: Project, direction: str, target: str, dry_run: bool,
             lock_timeout: float) -> RunResult:
    graph = project.graph
    planner = graph.upgrade_plan if direction == "upgrade" else graph.downgrade_plan
    command = f"{direction} {target}"
    with server_guard(project, command):
        return project.runner(lock_timeout, command).run(
            direction, lambda heads: planner(heads, target), dry_run=dry_run)


def stamp(project: Project, revisions: Sequence[str], *, purge: bool = False,
          lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> tuple[str, ...]:
    """Set the version collection to ``revisions`` without running anything.

    Heads on other branches stay unless ``purge``; ``stamp base`` empties the collection.
    Heads that no revision file defines are dropped (and said so).
    """
    graph = project.graph
    store = project.store

    def new_heads() -> tuple[tuple[str, ...], list[str]]:
        raw = store.heads()
        unknown = [h for h in raw if h not in graph]
        heads = normalize_heads(graph, tuple(h for h in raw if h in graph))
        return graph.stamp_heads(revisions, heads, purge=purge), unknown

    new_heads()  # bad input fails here, before the lock writes anything
    with Lock(store.leases, lease=project.config.lock_lease_seconds, timeout=lock_timeout,
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
    holder = store.leases.holder()
    if holder is None:
        return None
    if holder.expires_at > store.leases.now() and not force:
        raise CheckFailed(
            f"the lock is held by {holder.describe()} and its lease is live; "
            "pass --force only if that run is dead"
        )
    return holder if store.leases.force_release(holder) else None
