"""The run state the ``op`` objects of one upgrade or downgrade share: the database, the
write strategy, mongrate's undo and backups collections, the batch and statement sizes,
the lock check, and the run's direction. It knows nothing of passes or revisions."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pymongo.collection import Collection
from pymongo.database import Database

from mongrate.errors import StepCancelled
from mongrate.mongo.codec import MAJORITY, MAJORITY_READ, exact_dates
from mongrate.operations.strategy import Strategy
from mongrate.progress import Reporter


class Engine:
    """The run-wide side of the ``op`` objects of one upgrade or downgrade."""

    def __init__(self, db: Database, *, undo_collection: str, backups_collection: str,
                 strategy: Strategy, statement_limit: int, batch_size: int,
                 reporter: Reporter | None = None, dry_run: bool = False,
                 guard: Callable[[], None] | None = None, direction: str = "upgrade"):
        # every read of a pass (filters, _id lists) must decode any valid BSON date
        db = exact_dates(db) if isinstance(db, Database) else db
        self.db = db
        self.undo_name = undo_collection
        self.write_concern = MAJORITY
        self.undo: Collection = db.get_collection(undo_collection, write_concern=MAJORITY,
                                                  read_concern=MAJORITY_READ)
        self.backups: Collection = db.get_collection(backups_collection, write_concern=MAJORITY,
                                                     read_concern=MAJORITY_READ)
        self.strategy = strategy
        self.statement_limit = statement_limit
        self.batch_size = batch_size
        self.reporter = reporter or Reporter()
        self.dry_run = dry_run
        self.guard = guard
        self.direction = direction
        self.stop = threading.Event()  # set by op.parallel when one of its steps failed
        self.backup_stamp: str | None = None

    def check(self) -> None:
        """Raise if the run lost its lock or a parallel step failed."""
        if self.guard is not None:
            self.guard()
        if self.stop.is_set():
            raise StepCancelled("stopped because a parallel step failed")

