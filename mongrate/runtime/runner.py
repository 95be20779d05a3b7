"""Runs a plan: lock, detect interrupted steps, log each step, call it, move the heads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mongrate.config import Config
from mongrate.errors import (
    LockLostError,
    MongrateError,
    RevisionFailed,
    RunInterrupted,
)
from mongrate.graph.revisions import normalize_heads  # noqa: F401  (re-exported)
from mongrate.graph.scripts import ScriptDirectory, checksum
from mongrate.mongo.collections import statement_limit
from mongrate.names import OwnNames
from mongrate.operations import (
    DeferredStepFailed,
    Operations,
    OperationsRun,
    Strategy,
    choose,
    reported,
)
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
    note: str = ""  # e.g. "reverted": the undo of a failed or interrupted upgrade


@dataclass
class RunResult:
    direction: str
    steps: list[StepResult]
    heads_before: tuple[str, ...]
    heads_after: tuple[str, ...]
    resumed: list[dict] = field(default_factory=list)
    dry_run: bool = False
    strategy: str = ""


class _Run:
    """One run's moving parts: the heads so far, the steps done, the revisions held."""

    def __init__(self, runner: Runner, ops: OperationsRun, heads: tuple[str, ...]):
        self.runner, self.ops, self.heads = runner, ops, heads
        self.steps: list[StepResult] = []
        self.held: list[_Held] = []
        self._lock = threading.Lock()

    def release(self) -> None:
        """Apply held revisions in order, up to the first whose change still waits (also
        called when a pass writes deferred changes, mid-revision)."""
        with self._lock:
            while self.held and not self.ops.waiting(self.held[0].op):
                self.heads = self.runner._succeeded(self.ops.direction, self.held.pop(0),
                                                    self.heads, self.steps)


@dataclass
class _Held:
    """A revision that ran, waiting for its deferred changes to be written."""

    rev_id: str
    op: Operations
    log_id: Any
    started_at: Any
    started: float  # time.monotonic() when it began: its deferred pass counts too


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
        self._strategy: Strategy | None = None

    def current_heads(self) -> tuple[str, ...]:
        return normalize_heads(self.graph, self.store.heads())

    @property
    def statement_limit(self) -> int:
        if not hasattr(self, "_statement_limit"):
            self._statement_limit = statement_limit(self.store.db)
        return self._statement_limit

    def strategy(self, *, dry_run: bool) -> Strategy:
        """How this run's data helpers write, decided once per run."""
        if self._strategy is None:
            self._strategy = choose(self.store.db, self.config.write_strategy,
                                    probe=not dry_run)
        return self._strategy

    def run(self, direction: str, planner: Planner, *, dry_run: bool = False) -> RunResult:
        """Plan once without the lock (bad input fails before anything is written), then
        again under the lock, so a run that waited sees what the holder did."""
        heads = self.current_heads()
        plan = planner(heads)
        if dry_run:
            revert = self._partials(heads) if direction == "downgrade" else []
            return self._execute(direction, plan, heads, dry_run=True, lock=None, resumed=[],
                                 revert=revert)
        self.store.ensure_indexes()
        with Lock(self.store.leases, lease=self.config.lock_lease_seconds,
                  timeout=self.lock_timeout, command=self.command,
                  reporter=self.reporter) as lock:
            run_id = uuid.uuid4().hex
            stored = self.store.heads()  # read once: normalized, and rewritten if need be
            heads = normalize_heads(self.graph, stored)
            if heads != stored:
                self.store.move_heads(stored, heads)
            plan = planner(heads)
            if direction == "upgrade":
                self._refuse_half_downgraded(heads)
            interrupted = self._settle_interrupted(direction, plan, heads, run_id)
            revert = self._partials(heads) if direction == "downgrade" else []
            return self._execute(direction, plan, heads, dry_run=False, lock=lock,
                                 resumed=interrupted, run_id=run_id, revert=revert)

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

    def _refuse_half_downgraded(self, heads: tuple[str, ...]) -> None:
        """An applied revision whose last downgrade failed part way has some of its data
        restored and some not: upgrading past it would build on that."""
        applied = self.graph.applied(heads)
        for entry in self.store.last_failures():
            rev = entry["revision"]
            if entry["direction"] == "downgrade" and rev in applied:
                error = entry.get("error") or "see its log"
                raise RunInterrupted(
                    f"the downgrade of {rev} failed part way ({error}): its data is partly "
                    f"restored; finish it with 'mongrate downgrade {self._below(rev)}' (after "
                    "fixing the cause), then upgrade")

    def _below(self, rev: str) -> str:
        parents = self.graph.get(rev).down_revisions
        return parents[0] if len(parents) == 1 else ("base" if not parents else "-1")

    def _partials(self, heads: tuple[str, ...]) -> list[str]:
        """Revisions not applied that left recorded writes (a failed or interrupted
        upgrade), newest first: a downgrade reverses them before anything else."""
        applied = self.graph.applied(heads)
        recorded = set(self.store.undo.distinct("revision"))
        own = OwnNames.of(self.config)
        recorded.update(rev for rev, _ in own.side_collections(self.store.db.list_collection_names()))
        partial = [r for r in recorded if r in self.graph and r not in applied]
        return list(reversed(self.graph.topo_sort(partial)))

    def _operations(self, direction: str, *, dry_run: bool, lock: Lock | None) -> OperationsRun:
        return OperationsRun(self.store.db, undo_collection=self.config.undo_collection,
                             backups_collection=self.config.backups_collection,
                             strategy=self.strategy(dry_run=dry_run),
                             statement_limit=self.statement_limit,
                             batch_size=self.config.batch_size, reporter=self.reporter,
                             dry_run=dry_run, guard=lock.check if lock else None,
                             direction=direction)

    def _execute(self, direction: str, plan: list[str], heads: tuple[str, ...], *,
                 dry_run: bool, lock: Lock | None, resumed: list[dict], run_id: str = "",
                 revert: list[str] = ()) -> RunResult:
        resumed_ids = {e["revision"] for e in resumed}
        before = heads
        if not plan and not revert:
            return RunResult(direction, [], before, heads, resumed, dry_run)
        ops = self._operations(direction, dry_run=dry_run, lock=lock)
        run = _Run(self, ops, heads)
        ops.on_written(run.release)  # a held revision is applied once its pass is written
        strategy = ops.strategy.describe()
        if dry_run or self.reporter.verbose:
            self.reporter.info(strategy)
        writes = ops.writes
        for rev_id in revert:
            run.steps.append(self._revert(ops, rev_id, writes, run_id, dry_run=dry_run))
        arrow = "->" if direction == "upgrade" else "<-"
        for rev_id in plan:
            if lock:
                lock.check()
            rev = self.graph.get(rev_id)
            module = self.scripts.load_module(rev_id)
            verb = "resuming" if rev_id in resumed_ids else "running"
            parents = ", ".join(rev.down_revisions) or "<base>"
            self.reporter.info(
                f"{'would run' if dry_run else verb} {direction} {parents} {arrow} {rev_id}, {rev.message}")
            op = ops.op(rev_id)
            started = time.monotonic()
            if dry_run:
                mark = len(writes)
                try:
                    getattr(module, direction)(op)
                except MongrateError:
                    raise
                except Exception as exc:  # said with the revision's name, as a real run does
                    first_line = (str(exc).strip().splitlines() or [""])[0]
                    raise RevisionFailed(
                        f"dry run: {direction} of {rev_id} ({rev.message}) failed: "
                        f"{type(exc).__name__}: {first_line}; nothing was written") from exc
                run.steps.append(StepResult(rev_id, direction, time.monotonic() - started,
                                            writes[mark:], reported(op)))
                run.heads = self._move(direction, run.heads, rev_id)
                continue
            log_id, started_at = self.store.log_start(
                rev_id, direction, checksum=checksum(rev.path), run_id=run_id,
                resumed=rev_id in resumed_ids)
            try:
                getattr(module, direction)(op)
                if direction == "downgrade":
                    left = op.restore_undo()  # whatever its downgrade() left recorded
                    if left:
                        op.log(f"restored {left} recorded changes its downgrade left")
                if lock:
                    lock.check()  # never move heads for a step whose lock was taken away
            except BaseException as exc:
                self.store.log_finish(log_id, "failed", started_at=started_at, error=exc)
                ops.discard(op)
                raise self._failed(run, exc, rev_id) from exc
            run.held.append(_Held(rev_id, op, log_id, started_at, started))
            try:
                ops.write_untouched()
            except BaseException as exc:
                raise self._failed(run, exc, None) from exc
            run.release()
        try:
            ops.write_all()
        except BaseException as exc:
            raise self._failed(run, exc, None) from exc
        run.release()
        return RunResult(direction, run.steps, before, run.heads, resumed, dry_run, strategy)

    def _failed(self, run: _Run, exc: BaseException, running: str | None) -> BaseException:
        """A revision (``running``) or the pass writing deferred changes failed. Revisions
        whose changes are all written are applied; the others are marked failed (the next
        upgrade runs them again, a downgrade reverts what they wrote). Returns the error
        to raise: the lock's, Ctrl-C, or one line naming the revision whose change failed."""
        if isinstance(exc, KeyboardInterrupt | LockLostError):
            return exc  # held steps stay "started": the next run resumes them
        ops = run.ops
        error = exc.error if isinstance(exc, DeferredStepFailed) else exc
        culprit = exc.revision if isinstance(exc, DeferredStepFailed) else running
        if running is not None and not isinstance(exc, DeferredStepFailed):
            try:  # the earlier revisions' own work is sound: write what they deferred
                ops.write_all()
            except Exception as flush_exc:  # noqa: BLE001 - the first error is the one raised
                self.reporter.info(f"could not write the deferred changes: "
                                   f"{type(flush_exc).__name__}: {flush_exc}")
        run.release()
        later: list[str] = []  # ran after the culprit, their own changes all written
        for h in run.held:
            if h.rev_id == culprit:
                why = error
            elif ops.waiting(h.op):
                why = RuntimeError(f"its deferred change was not written: the pass also "
                                   f"writing the change of {culprit or 'another revision'} failed")
            else:
                later.append(h.rev_id)
                why = RuntimeError(f"not applied: it ran after {culprit or 'a revision'}, whose "
                                   "deferred change then failed; 'mongrate upgrade' runs it again")
            self.store.log_finish(h.log_id, "failed", started_at=h.started_at, error=why)
        run.held.clear()
        first_line = (str(error).strip().splitlines() or [""])[0]
        if culprit is None:
            return RevisionFailed(f"writing deferred changes failed: {type(error).__name__}: "
                                  f"{first_line}; the revisions waiting for them were not "
                                  "applied: 'mongrate upgrade' runs them again")
        rev = self.graph.get(culprit)
        after = (f"{', '.join(later)} ran after it and {'was' if len(later) == 1 else 'were'} "
                 "not applied" if later else "nothing after it ran")
        hint = ("'mongrate upgrade' resumes it, 'mongrate downgrade' reverses what it wrote"
                if ops.direction == "upgrade" else
                "its data may be partly restored: fix the cause and run the downgrade again")
        return RevisionFailed(
            f"{ops.direction} of {culprit} ({rev.message}) failed: {type(error).__name__}: "
            f"{first_line}; {after}; {hint}; "
            f"see 'mongrate history -v -r {culprit}:{culprit}'")

    def _revert(self, ops: OperationsRun, rev_id: str, writes: list[dict], run_id: str, *,
                dry_run: bool) -> StepResult:
        """Undo what a failed or interrupted upgrade of ``rev_id`` wrote."""
        self.reporter.info(f"{'would revert' if dry_run else 'reverting'} the partial upgrade "
                           f"of {rev_id} (it failed or was interrupted): undoing what it wrote")
        started = time.monotonic()
        op = ops.op(rev_id, "downgrade", watched_db=False)
        mark = len(writes)
        if dry_run:
            op.restore_undo()
            return StepResult(rev_id, "downgrade", time.monotonic() - started, writes[mark:],
                              note="reverted")
        rev = self.graph.get(rev_id)
        log_id, started_at = self.store.log_start(rev_id, "downgrade",
                                                  checksum=checksum(rev.path), run_id=run_id)
        try:
            op.restore_undo()
            ops.forget(rev_id)
        except BaseException as exc:
            self.store.log_finish(log_id, "failed", started_at=started_at, error=exc)
            raise
        self.store.log_finish(log_id, "succeeded", started_at=started_at,
                              extra={"results": _loggable(reported(op)), "reverted": True})
        self.store.mark_interrupted(self.store.log.find({"revision": rev_id,
                                                         "status": "started"}), by_run=run_id)
        return StepResult(rev_id, "downgrade", time.monotonic() - started,
                          results=reported(op), note="reverted")

    def _succeeded(self, direction: str, h: _Held, heads: tuple[str, ...],
                   steps: list[StepResult]) -> tuple[str, ...]:
        new_heads = self._move(direction, heads, h.rev_id)
        self.store.move_heads(heads, new_heads)
        results = _loggable(reported(h.op))
        self.store.log_finish(h.log_id, "succeeded", started_at=h.started_at,
                              extra={"results": results} if results else None)
        steps.append(StepResult(h.rev_id, direction, time.monotonic() - h.started,
                                results=results))
        return new_heads

    def _move(self, direction: str, heads: tuple[str, ...], rev_id: str) -> tuple[str, ...]:
        if direction == "upgrade":
            return tuple(self.graph.heads_after_upgrade(heads, rev_id))
        return tuple(self.graph.heads_after_downgrade(heads, rev_id))


def _loggable(results: dict[str, Any]) -> dict[str, Any]:
    """A step's results as the log stores them: counts resolved, no dots in keys (FerretDB
    v1 refuses them)."""
    return {str(k).replace(".", "_"): int(v) if hasattr(v, "value") else v
            for k, v in results.items()}
