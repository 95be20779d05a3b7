"""One configured project: its revision files and (lazily) its database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mongrate.config import Config
from mongrate.graph.revisions import RevisionGraph, normalize_heads
from mongrate.graph.scripts import ScriptDirectory
from mongrate.progress import Reporter

if TYPE_CHECKING:  # pymongo and the engine load when a verb first needs the database
    from pymongo.database import Database

    from mongrate.runtime.runner import Runner
    from mongrate.runtime.store import Store


class Project:
    """Scripts and (lazily) the database of one configured project."""

    def __init__(self, config: Config, reporter: Reporter | None = None, *,
                 scripts: ScriptDirectory | None = None, db: Database | None = None):
        """``scripts`` and ``db`` let many projects share one revisions folder and one
        client (the fleet commands); a ``db`` given is not closed by :meth:`close`."""
        self.config = config
        self.reporter = reporter or Reporter()
        self.scripts = scripts or ScriptDirectory(config)
        self._store: Store | None = None
        if db is not None:
            from mongrate.runtime.store import Store

            self._store = Store(db, config)
        self._client = None

    @property
    def graph(self) -> RevisionGraph:
        return self.scripts.graph

    @property
    def store(self) -> Store:
        if self._store is None:
            from mongrate.runtime.store import Store, connect

            self._client, db = connect(self.config)
            self._store = Store(db, self.config)
        return self._store

    def current_heads(self) -> tuple[str, ...]:
        return normalize_heads(self.graph, self.store.heads())

    def runner(self, lock_timeout: float, command: str) -> Runner:
        from mongrate.runtime.runner import Runner

        return Runner(self.config, self.scripts, self.store, reporter=self.reporter,
                      lock_timeout=lock_timeout, command=command)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

