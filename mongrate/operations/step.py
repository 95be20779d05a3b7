"""A step: one helper call's change to one collection, as the passes carry it.

A step belongs to one revision's call (:class:`~mongrate.operations.context.RevisionContext`):
its pass state, its side collection of prior values and its count are that call's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument

from mongrate.mongo.codec import RAW
from mongrate.mongo.rawdoc import Change
from mongrate.operations.context import RevisionContext, state_key
from mongrate.operations.undo import SideCollection, record

Changer = Callable[[RawBSONDocument], "Change | ServerUpdate | None"]


@dataclass
class ServerUpdate:
    """What a changer returns for a document whose result it cannot compute exactly (an
    update the evaluator cannot decide on for these values): the server applies ``update``
    to it (to its copy, in a rewrite), once ``prior`` (the fields it may change) is
    recorded."""

    update: Mapping[str, Any]
    prior: Change


@dataclass(frozen=True)
class FoldedBackup:
    """A backup left to the next rewrite pass over its collection (see
    ``op.backup_collection``): that pass keeps the original, renamed, as the snapshot.
    The pass calls back through this handle, so it needs nothing above it."""

    read: Callable[[int, str], None]  # what the pass read, checked unchanged: (count, checksum)
    swap: Callable[[str], None]  # rename original -> snapshot, the pass's copy -> original
    empty: Callable[[str], None]  # the pass found nothing to keep (its checksum): no snapshot


@dataclass(eq=False)
class Step:
    """One helper call's change to one collection."""

    ctx: RevisionContext
    collection: str
    seq: int
    changer: Changer | None  # None: the caller passes each document's change to put()
    label: str
    filter: Mapping[str, Any] | None = None  # server-side filter (only a pass's first step)
    changed: int = 0
    done: bool = False
    result: Any = None  # the LazyCount handed back for a deferred step
    priors: list[RawBSONDocument] = field(default_factory=list)
    #: a folded backup: the pass keeps the original as the snapshot
    backup: FoldedBackup | None = None

    @property
    def key(self) -> dict[str, Any]:
        return state_key(self.ctx.revision, self.collection, self.seq)

    @property
    def ident(self) -> str:
        # a string: FerretDB v1 stores no nested arrays
        return f"{self.ctx.revision}:{self.seq}"

    def side(self) -> SideCollection:
        return self.ctx.side(self.collection)

    def state(self) -> dict[str, Any]:
        """This step's pass state record (empty if it has none yet)."""
        return self.ctx.engine.undo.find_one(self.key) or {}

    def mark_done(self) -> None:
        """Record the step as written, with its count (a deferred step's count is then
        known; the call's results list it)."""
        if self.done:
            return
        self.ctx.engine.undo.update_one(self.key, {"$set": {"state": "done",
                                                            "result": self.changed}},
                                        upsert=True)
        self.done = True
        if self.result is not None:  # the LazyCount a deferred step handed back
            self.result.set(self.changed)
        self.ctx.results.setdefault(self.label, self.changed)

    def apply(self, base: bytes) -> Change | ServerUpdate | None:
        if not self.changer:
            return None
        try:
            return self.changer(RawBSONDocument(base, RAW))
        except Exception as exc:  # noqa: BLE001 - said whose change it was, then re-raised
            if self.result is not None:  # deferred: it runs inside another call's pass
                raise DeferredStepFailed(self.ctx.revision, exc) from exc
            raise

    def note(self, base: bytes, change: Change | ServerUpdate) -> None:
        """Count ``change`` and queue its prior-value record (upgrades only)."""
        known = not isinstance(change, ServerUpdate)  # the server computes what it writes
        if not known:
            change = change.prior
        self.changed += 1
        if self.ctx.direction == "upgrade":
            self.priors.append(record(base, self.seq, change, known=known))

    def take_priors(self) -> list[RawBSONDocument]:
        out, self.priors = self.priors, []
        return out


class DeferredStepFailed(Exception):
    """A deferred change raised while a later pass was writing it: whose it was."""

    def __init__(self, revision: str, error: Exception):
        super().__init__(f"{type(error).__name__}: {error}")
        self.revision = revision
        self.error = error

