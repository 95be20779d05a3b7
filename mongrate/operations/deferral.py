"""Deferring (``rewrite`` strategy, upgrades only): a whole-collection change (``change_each``
or ``update_many``; the first one may have a filter) is not written at once. The next pass
over that collection in this run applies it to each document as it reads it, recording its
prior values in its own revision's side collection, and writes the document once: two
revisions that each change every message cost one read and one write, not two. The change
is written on its own:

- when anything reads or writes the collection through ``op.db`` (it sees every change
  made before it), or takes a backup of it, or creates an index on it;
- when a revision ends without having touched the collection;
- at the end of the run, and before a failed revision is reported.

A revision whose change waits is applied (its heads move) only once the change is written;
if the run dies first, the next run runs it again (its finished passes are skipped).

The queue does not write a pass itself: it is given the function that does (the rewrite
pass, :func:`mongrate.operations.rewrite.rewrite_pass`), so it sits below the passes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mongrate.errors import OpError
from mongrate.operations.context import RevisionContext
from mongrate.operations.engine import Engine
from mongrate.operations.step import Step

#: writes the given steps of one collection in one pass of their own
PassWriter = Callable[[str, list[Step]], int]


class Deferral:
    """The changes of one run waiting for the next pass over their collection."""

    def __init__(self, engine: Engine, write_pass: PassWriter):
        self.engine = engine
        self._write_pass = write_pass
        self.pending: dict[str, list[Step]] = {}
        self.touched: set[str] = set()  # collections the running revision deferred or passed
        self._lock = threading.RLock()
        self.enabled = True  # tests turn it off to see each helper write at once
        #: called after a pass wrote deferred changes (the runner applies held revisions)
        self.on_flushed: Callable[[], None] | None = None

    @property
    def can_defer(self) -> bool:
        eng = self.engine
        return (self.enabled and eng.strategy.rewrite and eng.direction == "upgrade"
                and not eng.dry_run)

    def defer(self, step: Step) -> LazyCount:
        """Leave ``step`` to the next pass over its collection (see the module docstring)."""
        with self._lock:
            self.touched.add(step.collection)
            if step.filter and self.pending.get(step.collection):
                self.flush(step.collection)  # a filter must see the stored documents
            stale = step.state().get("tmp")
            self.engine.undo.update_one(step.key, {"$set": {"state": "deferred"},
                                                   "$unset": {"tmp": "", "steps": ""}}, upsert=True)
            if stale:  # built by an interrupted run; the pass that writes the step builds anew
                self.engine.db.drop_collection(stale)
            step.result = LazyCount(lambda: self.flush(step.collection))
            self.pending.setdefault(step.collection, []).append(step)
            return step.result

    def take_pending(self, collection: str) -> list[Step]:
        """The deferred steps a pass over ``collection`` is about to write (they leave the
        queue; :meth:`give_back` returns them if that pass does not happen)."""
        with self._lock:
            self.touched.add(collection)
            return [s for s in self.pending.pop(collection, []) if not s.done]

    def give_back(self, collection: str, steps: list[Step]) -> None:
        with self._lock:
            left = [s for s in steps if not s.done]
            if left:
                self.pending[collection] = left + self.pending.get(collection, [])

    def accessed(self, name: str | None) -> None:
        """``op.db`` is about to touch ``name`` (None: anything): write what waits for it."""
        if not self.pending:
            return
        with self._lock:
            for coll in list(self.pending):
                if name is None or coll == name or coll.startswith(f"{name}."):
                    self.flush(coll)

    def flush(self, collection: str) -> None:
        """Write the deferred steps of ``collection`` in one pass of their own."""
        with self._lock:
            steps = self.take_pending(collection)
            if not steps:
                return
            try:
                self._write_pass(collection, steps)
            except BaseException:
                self.give_back(collection, steps)
                raise
            if self.on_flushed is not None:
                self.on_flushed()

    def flush_untouched(self) -> None:
        """A revision ended: write what waits for collections it did not touch."""
        with self._lock:
            for coll in [c for c in self.pending if c not in self.touched]:
                self.flush(coll)
            self.touched = set()

    def flush_all(self) -> None:
        with self._lock:
            for coll in list(self.pending):
                self.flush(coll)

    def waiting(self, ctx: RevisionContext) -> bool:
        """True while a deferred step of ``ctx``'s revision call is not written yet."""
        return any(s.ctx is ctx and not s.done for steps in self.pending.values() for s in steps)

    def discard(self, ctx: RevisionContext) -> None:
        """Forget ``ctx``'s deferred steps (its revision failed: the next run redoes them)."""
        with self._lock:
            for coll in list(self.pending):
                self.pending[coll] = [s for s in self.pending[coll] if s.ctx is not ctx]
                if not self.pending[coll]:
                    del self.pending[coll]


class LazyCount:
    """The count of a deferred step: known once the pass that writes it has run. Using it
    (printing, comparing, arithmetic) runs that pass now."""

    def __init__(self, resolve: Callable[[], int]):
        self._resolve = resolve
        self._value: int | None = None
        self._lock = threading.Lock()

    def set(self, value: int) -> None:
        self._value = value

    def value(self) -> int:
        with self._lock:
            if self._value is None:
                self._resolve()
            if self._value is None:  # its step is in a pass that is running now
                raise OpError("a helper's count was used while the pass writing its change "
                              "was still running (inside an op.change_groups function?): "
                              "use it after that helper returns")
            return self._value

    def __int__(self) -> int:
        return self.value()

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return self.value() == other

    def __lt__(self, other: int) -> bool:
        return self.value() < other

    def __le__(self, other: int) -> bool:
        return self.value() <= other

    def __gt__(self, other: int) -> bool:
        return self.value() > other

    def __ge__(self, other: int) -> bool:
        return self.value() >= other

    def __hash__(self) -> int:
        return hash(self.value())

    def __bool__(self) -> bool:
        return bool(self.value())

    def __add__(self, other: int) -> int:
        return self.value() + int(other)

    __radd__ = __add__

    def __sub__(self, other: int) -> int:
        return self.value() - int(other)

    def __rsub__(self, other: int) -> int:
        return int(other) - self.value()

    def __mul__(self, other: int) -> int:
        return self.value() * int(other)

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> float:
        return self.value() / other

    def __rtruediv__(self, other: float) -> float:
        return other / self.value()

    def __floordiv__(self, other: int) -> int:
        return self.value() // int(other)

    def __neg__(self) -> int:
        return -self.value()

    def __repr__(self) -> str:
        return repr(self.value())

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(self.value(), spec)
