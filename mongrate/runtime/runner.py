"""Runs a plan: lock, detect interrupted steps, log each step, call it, move the heads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mongrate.config import Config
from mongrate.errors import (
    LockLostError,
    RevisionFailed,
    RunInterrupted,
    ScriptError,
)
from mongrate.graph.revisions import RevisionGraph
from mongrate.graph.scripts import ScriptDirectory, checksum
from mongrate.mongo.collections import statement_limit
from mongrate.mongo.dryrun import RecordingDatabase
from mongrate.operations.ops import Operations
from mongrate.progress import Reporter
from mongrate.runtime.lock import Lock
from mongrate.runtime.store import Store

Planner = Callable[[tuple[str, ...]], list[str]]


@dataclass
class StepResult:
    revision: str
    direction: str
    duration: float
    writes: list[dict] = field(default_factory=list)  # dry run only
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    direction: str
    steps: list[StepResult]
    heads_before: tuple[str, ...]
    heads_after: tuple[str, ...]
    resumed: list[dict] = field(default_factory=list)
    dry_run: bool = False


def normalize_heads(graph: RevisionGraph, heads: tuple[str, ...]) -> tuple[str, ...]:
    """Drop recorded heads that are ancestors of other heads (left by an interrupted move)."""
    known = [h for h in heads if h in graph]
    below: set[str] = set()
    for h in known:
        below |= graph.ancestors([h], inclusive=False)
    return tuple(sorted(h for h in known if h not in below)) + tuple(
        sorted(h for h in heads if h not in graph)
    )


class Runner:
    """Executes upgrade/downgrade plans against one database."""

    def __init__(self, config: Config, scripts: ScriptDirectory, store: Store, *,
                 reporter: Reporter | None = None, lock_timeout: float = 60.0,
                 command: str = "mongrate"):
        self.config = config
        self.scripts = scripts
        self.graph = scripts.graph
        self.store = store
        self.reporter = reporter or Reporter()
        self.lock_timeout = lock_timeout
        self.command = command

    def current_heads(self) -> tuple[str, ...]:
        return normalize_heads(self.graph, self.store.heads())

    @property
    def statement_limit(self) -> int:
        if not hasattr(self, "_statement_limit"):
            self._statement_limit = statement_limit(self.store.db)
        return self._statement_limit

    def run(self, direction: str, planner: Planner, *, dry_run: bool = False) -> RunResult:
        """Plan once without the lock (bad input fails before anything is written), then
        again under the lock, so a run that waited sees what the holder did."""
        heads = self.current_heads()
        plan = planner(heads)
        if dry_run:
            return self._execute(direction, plan, heads, dry_run=True, lock=None, resumed=[])
        self.store.ensure_indexes()
        with Lock(self.store.leases, lease=self.config.lock_lease_seconds, timeout=self.lock_timeout,
                  command=self.command, reporter=self.reporter) as lock:
            run_id = uuid.uuid4().hex
            heads = self.current_heads()
            if heads != self.store.heads():
                self.store.set_heads(heads)
            plan = planner(heads)
            interrupted = self._settle_interrupted(direction, plan, heads, run_id)
            return self._execute(direction, plan, heads, dry_run=False, lock=lock,
                                 resumed=interrupted, run_id=run_id)

    def _settle_interrupted(self, direction: str, plan: list[str], heads: tuple[str, ...],
                            run_id: str) -> list[dict]:
        """Interrupted steps this plan runs again are resumed; ones the heads show finished
        are closed; any other stops the run, saying how to finish it."""
        entries = self.store.interrupted()
        if not entries:
            return []
        applied = self.graph.applied(heads)
        resumed, settled = [], []
        for e in entries:
            rev, step_dir = e["revision"], e["direction"]
            if rev not in self.graph:
                settled.append(e)  # its file is gone; nothing can re-run it
            elif step_dir == direction and rev in plan:
                resumed.append(e)
            elif (step_dir == "upgrade") == (rev in applied):
                settled.append(e)  # the heads show this step completed
            else:
                parents = self.graph.get(rev).down_revisions
                target = parents[0] if len(parents) == 1 else ("base" if not parents else "-1")
                verb = f"upgrade {rev}" if step_dir == "upgrade" else f"downgrade {target}"
                raise RunInterrupted(
                    f"the {step_dir} of {rev} was interrupted at "
                    f"{e['started_at']:%Y-%m-%d %H:%M:%S} UTC and is unfinished: run "
                    f"'mongrate {verb}' first to finish it"
                )
        for e in resumed:
            self.reporter.info(
                f"found interrupted {e['direction']} of {e['revision']} (started "
                f"{e['started_at']:%Y-%m-%d %H:%M:%S} UTC by {e.get('host')} pid {e.get('pid')}); "
                "resuming it"
            )
        self.store.mark_interrupted(resumed + settled, by_run=run_id)
        return resumed

    def _execute(self, direction: str, plan: list[str], heads: tuple[str, ...], *,
                 dry_run: bool, lock: Lock | None, resumed: list[dict],
                 run_id: str = "") -> RunResult:
        resumed_ids = {e["revision"] for e in resumed}
        before = heads
        steps: list[StepResult] = []
        arrow = "->" if direction == "upgrade" else "<-"
        held: list[_Held] = []  # steps whose folded changes the next step writes
        for i, rev_id in enumerate(plan):
            if lock:
                lock.check()
            rev = self.graph.get(rev_id)
            module = self.scripts.load_module(rev_id)
            verb = "resuming" if rev_id in resumed_ids else "running"
            parents = ", ".join(rev.down_revisions) or "<base>"
            self.reporter.info(
                f"{'would run' if dry_run else verb} {direction} {parents} {arrow} {rev_id}, {rev.message}"
            )
            writes: list[dict] = []
            db = RecordingDatabase(self.store.db, writes) if dry_run else self.store.db
            undo = db[self.config.undo_collection]
            backups = db[self.config.backups_collection]
            op = Operations(db, undo=undo, backups=backups, revision=rev_id, direction=direction,
                            batch_size=self.config.batch_size, reporter=self.reporter,
                            dry_run=dry_run, guard=lock.check if lock else None,
                            statement_limit=self.statement_limit,
                            next_absorbs=() if dry_run else self._absorbs(direction, plan, i),
                            inbox=held[-1].op.outbox if held else ())
            started = time.monotonic()
            if dry_run:
                try:
                    getattr(module, direction)(op)
                finally:
                    op.close()
                steps.append(StepResult(rev_id, direction, time.monotonic() - started, writes))
                heads = self._move(direction, heads, rev_id)
                continue
            log_id, started_at = self.store.log_start(
                rev_id, direction, checksum=checksum(rev.path), run_id=run_id,
                resumed=rev_id in resumed_ids)
            try:
                try:
                    getattr(module, direction)(op)
                    unwritten = [f.revision for f in op.inbox
                                 if not f.done and f not in op.outbox]
                    if unwritten:  # its reads saw the collection without those changes
                        raise ScriptError(
                            f"{rev_id} declares 'absorbs' but did not write the change of "
                            f"{', '.join(unwritten)} folded into it: rewrite the collection "
                            "with op.rewrite(...) and read it through rw.absorb(...)")
                finally:
                    op.close()
                if lock:
                    lock.check()  # never move heads for a step whose lock was taken away
            except BaseException as exc:
                self.store.log_finish(log_id, "failed", started_at=started_at, error=exc)
                if isinstance(exc, KeyboardInterrupt | LockLostError):
                    raise  # held steps stay "started": the next run resumes them
                heads = self._settle_held(direction, held, heads, steps)
                first_line = (str(exc).strip().splitlines() or [""])[0]
                raise RevisionFailed(
                    f"{direction} of {rev_id} ({rev.message}) failed: "
                    f"{type(exc).__name__}: {first_line}; "
                    f"nothing after it ran; see 'mongrate history -v -r {rev_id}:{rev_id}'"
                ) from exc
            this = _Held(rev_id, op, log_id, started_at, time.monotonic() - started)
            if op.outbox:  # its heads move once the next step has written its changes
                held.append(this)
                continue
            for h in [*held, this]:
                heads = self._succeeded(direction, h, heads, steps)
            held = []
        return RunResult(direction, steps, before, heads, resumed, dry_run)

    def _succeeded(self, direction: str, h: _Held, heads: tuple[str, ...],
                   steps: list[StepResult]) -> tuple[str, ...]:
        new_heads = self._move(direction, heads, h.rev_id)
        self.store.move_heads(heads, new_heads)
        results = h.op.results
        self.store.log_finish(h.log_id, "succeeded", started_at=h.started_at,
                              extra={"results": results} if results else None)
        steps.append(StepResult(h.rev_id, direction, h.duration, results=dict(results)))
        return new_heads

    def _settle_held(self, direction: str, held: list[_Held], heads: tuple[str, ...],
                     steps: list[StepResult]) -> tuple[str, ...]:
        """The step after ``held`` failed: write their folded changes on their own and
        apply them (their own work is done), so the run stops right after them. A change
        already in the failed step's built copy, or one that cannot be written now, is left
        to the next run: those steps stay "started", as after a kill."""
        from mongrate.operations.rewrite import fold_alone

        for h in held:
            if any(f.built_into and not f.done for f in h.op.outbox):
                self.reporter.info(f"{h.rev_id}: its change waits in the copy the failed step "
                                   "built; run the command again to finish both")
                break
            try:
                for fold in h.op.outbox:
                    if not fold.done:
                        fold_alone(h.op, fold)
            except Exception as exc:  # noqa: BLE001 - the failed step's error is the one raised
                self.reporter.info(f"{h.rev_id}: could not write its folded change on its own "
                                   f"({type(exc).__name__}: {exc}); run the command again")
                break
            finally:
                h.op.close()
            heads = self._succeeded(direction, h, heads, steps)
        return heads

    def _absorbs(self, direction: str, plan: list[str], i: int) -> tuple[str, ...]:
        """Collections whose changes plan[i] may fold into plan[i + 1]: only on the way up,
        into a child of plan[i] that declares ``absorbs``."""
        if direction != "upgrade" or i + 1 >= len(plan):
            return ()
        nxt = plan[i + 1]
        if self.graph.get(nxt).down_revisions != (plan[i],):
            return ()
        absorbs = getattr(self.scripts.load_module(nxt), "absorbs", None) or ()
        return (absorbs,) if isinstance(absorbs, str) else tuple(absorbs)

    def _move(self, direction: str, heads: tuple[str, ...], rev_id: str) -> tuple[str, ...]:
        if direction == "upgrade":
            return tuple(self.graph.heads_after_upgrade(heads, rev_id))
        return tuple(self.graph.heads_after_downgrade(heads, rev_id))


@dataclass
class _Held:
    rev_id: str
    op: Operations
    log_id: Any
    started_at: Any
    duration: float
