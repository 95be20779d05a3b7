"""The operations side of one upgrade or downgrade, as the runner (and the testing kit)
drive it: one ``op`` per revision call, the changes deferred between them written when
the runner says, and the records of a reverted revision forgotten."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pymongo.database import Database

from mongrate.mongo.dryrun import RecordingDatabase
from mongrate.operations.context import RevisionContext
from mongrate.operations.deferral import Deferral
from mongrate.operations.engine import Engine
from mongrate.operations.ops import Operations
from mongrate.operations.rewrite import rewrite_pass
from mongrate.operations.rundb import RunDatabase
from mongrate.operations.strategy import Strategy
from mongrate.progress import Reporter


class OperationsRun:
    """One run's ``op`` objects and what they share: the run state, and the queue of
    changes deferred to a later pass (``rewrite`` strategy, upgrades only; see
    :mod:`mongrate.operations.deferral`)."""

    def __init__(self, db: Database, *, undo_collection: str, backups_collection: str,
                 strategy: Strategy, statement_limit: int, batch_size: int,
                 reporter: Reporter | None = None, dry_run: bool = False,
                 guard: Callable[[], None] | None = None, direction: str = "upgrade",
                 defer: bool = True):
        """``db`` is wrapped to record writes in a dry run; ``guard`` raises once the run
        has lost its lock; ``defer=False`` makes every helper write before it returns."""
        self._engine = Engine(RecordingDatabase(db) if dry_run else db,
                              undo_collection=undo_collection,
                              backups_collection=backups_collection, strategy=strategy,
                              statement_limit=statement_limit, batch_size=batch_size,
                              reporter=reporter, dry_run=dry_run, guard=guard,
                              direction=direction)
        self._deferral = Deferral(self._engine, partial(rewrite_pass, self._engine))
        self._deferral.enabled = defer

    @property
    def strategy(self) -> Strategy:
        return self._engine.strategy

    @property
    def direction(self) -> str:
        return self._engine.direction

    @property
    def writes(self) -> list[dict[str, Any]]:
        """In a dry run, every write the helpers would have sent, in order (else empty)."""
        db = self._engine.db
        return db.writes if isinstance(db, RecordingDatabase) else []

    def op(self, revision: str, direction: str | None = None, *,
           watched_db: bool = True) -> Operations:
        """The ``op`` of one call of ``revision`` (in the run's direction unless given).
        Its ``op.db`` writes the changes waiting for a collection before touching it,
        unless ``watched_db`` is False or the run is dry."""
        eng = self._engine
        ctx = RevisionContext(eng, revision, direction or eng.direction)
        db = RunDatabase(eng.db, self._deferral) if watched_db and not eng.dry_run else eng.db
        return Operations(ctx, self._deferral, db=db)

    def on_written(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` after each pass that wrote deferred changes."""
        self._deferral.on_flushed = callback

    def waiting(self, op: Operations) -> bool:
        """True while a change ``op`` deferred is not written yet."""
        return self._deferral.waiting(op._ctx)

    def write_untouched(self) -> None:
        """A revision ended: write the changes waiting for collections it did not touch."""
        self._deferral.flush_untouched()

    def write_all(self) -> None:
        """Write every change still waiting (the end of a run, or before a failure)."""
        self._deferral.flush_all()

    def discard(self, op: Operations) -> None:
        """Forget the changes ``op`` deferred (its revision failed: the next run redoes
        them)."""
        self._deferral.discard(op._ctx)

    def forget(self, revision: str) -> None:
        """Delete every undo record of ``revision`` (its partial upgrade was reverted)."""
        self._engine.undo.delete_many({"revision": revision})
