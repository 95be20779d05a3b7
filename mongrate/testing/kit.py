"""A testing kit for revision authors (pytest-alembic's built-in tests are the model).

- :func:`revision_op`: the ``op`` a revision gets, on a test database, without the lock,
  log or version bookkeeping: call one revision's ``upgrade``/``downgrade`` directly.
- :func:`run_revision`: load a revision file and run one direction of it.
- :class:`Harness`: the real commands (``upgrade``, ``downgrade``...) against a test
  database, :meth:`Harness.snapshot` of its data byte for byte, and the checks
  :meth:`~Harness.single_head`, :meth:`~Harness.stairway` and
  :meth:`~Harness.up_down_consistency`.

``pytest --mongrate-tests`` (or ``mongrate_tests = true`` in the pytest ini) adds those
checks to a run as tests, against the project's ``mongrate.ini`` (``--mongrate-config``)
and a fresh database of the test server; a ``mongrate_seed(db)`` fixture, if the project
defines one, fills it first so the stairway moves real data.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from mongrate.config import Config, database_from_url, load_config
from mongrate.mongo.codec import RAW, exact_dates
from mongrate.mongo.collections import statement_limit
from mongrate.names import OwnNames
from mongrate.operations import Operations, OperationsRun, choose, reported
from mongrate.progress import Reporter

#: Collections a snapshot leaves out: mongrate's own, and the write-strategy probe's.


@contextmanager
def revision_op(db: Database, revision: str = "test", direction: str = "upgrade", *,
                write_strategy: str = "auto", batch_size: int = 1000, dry_run: bool = False,
                config: Config | None = None, reporter: Reporter | None = None,
                defer: bool = True) -> Iterator[Operations]:
    """The ``op`` of one revision on ``db``; changes it deferred are written when the block
    ends without an error (as the end of a run writes them). ``defer=False`` makes every
    helper write before it returns."""
    config = config or Config()
    db = exact_dates(db)
    run = OperationsRun(db, undo_collection=config.undo_collection,
                        backups_collection=config.backups_collection,
                        strategy=choose(db, write_strategy, probe=not dry_run),
                        statement_limit=statement_limit(db), batch_size=batch_size,
                        reporter=reporter or Reporter(quiet=True), dry_run=dry_run,
                        direction=direction, defer=defer)
    yield run.op(revision)
    run.write_all()


def load_revision(path: str | Path) -> ModuleType:
    """Import a revision file the way the engine does."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"mongrate_test_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_revision(db: Database, revision: ModuleType | str | Path, direction: str = "upgrade",
                 **options: Any) -> dict[str, Any]:
    """Run one direction of one revision (a module or a file) on ``db``; its results. As in
    a real run, a downgrade is followed by the restore of what it left recorded."""
    module = revision if isinstance(revision, ModuleType) else load_revision(revision)
    with revision_op(db, getattr(module, "revision", "test"), direction, **options) as op:
        getattr(module, direction)(op)
        if direction == "downgrade":
            op.restore_undo()
    return {k: int(v) if hasattr(v, "value") else v for k, v in reported(op).items()}


def snapshot(db: Database, own: OwnNames | None = None) -> dict[str, Any]:
    """Every collection but mongrate's own bookkeeping (``own``: the config's names, by
    default the defaults): documents as raw BSON bytes (sorted) and index specs. Two
    snapshots are equal only if every byte is. An empty collection with no index but
    ``_id``'s counts as absent (a write creates one implicitly)."""
    ours = set((own or OwnNames()).ours(names := db.list_collection_names()))
    out: dict[str, Any] = {}
    for name in sorted(names):
        if name in ours:
            continue
        docs = sorted(bytes(d.raw) for d in db.get_collection(name, codec_options=RAW).find())
        indexes = {k: {kk: vv for kk, vv in v.items() if kk not in ("v", "ns")}
                   for k, v in db[name].index_information().items()}
        if docs or set(indexes) - {"_id_"}:
            out[name] = {"docs": docs, "indexes": indexes}
    return out


class Harness:
    """The project's revisions and commands against one (test) database."""

    def __init__(self, url: str, config: Config | str | Path | None = None, **overrides: Any):
        from mongrate.commands import Project

        base = config if isinstance(config, Config) else (
            load_config(config) if config is not None else Config())
        self.config = replace(base, url=url, **overrides)
        self.reporter = Reporter(quiet=True)
        self.project = Project(self.config, self.reporter)
        self.client: MongoClient = MongoClient(url, tz_aware=False)
        self.db = self.client[database_from_url(url) or self.config.database_name]

    def close(self) -> None:
        self.project.close()
        self.client.close()

    @property
    def graph(self):
        return self.project.graph

    def upgrade(self, target: str = "head", **kwargs: Any):
        from mongrate import commands

        return commands.upgrade(self.project, target, **kwargs)

    def downgrade(self, target: str, **kwargs: Any):
        from mongrate import commands

        return commands.downgrade(self.project, target, **kwargs)

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.db, OwnNames.of(self.config))

    def _step(self, direction: str, rev: str):
        """Exactly one revision, whatever the branches around it."""
        runner = self.project.runner(60.0, f"stairway {direction} {rev}")
        return runner.run(direction, lambda heads: [rev])

    # ------------------------------------------------------------- the checks
    def single_head(self) -> str:
        """The one head revision; AssertionError if there are several (or none)."""
        heads = self.graph.heads
        assert len(heads) == 1, (f"expected one head revision, found {len(heads)}: "
                                 f"{', '.join(heads) or 'none'}; 'mongrate merge heads'")
        return heads[0]

    def up_down_consistency(self) -> None:
        """Every revision can be upgraded to and downgraded from, base to head and back."""
        self.upgrade("heads")
        self.downgrade("base")

    def stairway(self, seed: Callable[[Database], Any] | None = None) -> list[str]:
        """Upgrade one step at a time from base to head, downgrade one step at a time back,
        and check each downgrade restores exactly (byte for byte) what was there before
        that step's upgrade. Returns the revisions in upgrade order."""
        self.downgrade("base")
        if seed is not None:
            seed(self.db)
        order = [r.revision for r in self.graph]
        before: dict[str, dict[str, Any]] = {}
        for rev in order:
            before[rev] = self.snapshot()
            self._step("upgrade", rev)
        for rev in reversed(order):
            self._step("downgrade", rev)
            now = self.snapshot()
            if now != before[rev]:
                changed = sorted(n for n in set(now) | set(before[rev])
                                 if now.get(n) != before[rev].get(n))
                raise AssertionError(f"downgrading {rev} did not restore the data as it was "
                                     f"before its upgrade: {', '.join(changed)} differ")
        return order
