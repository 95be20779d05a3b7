"""Error types. Each carries the one line a user needs; the CLI maps them to exit codes."""

from __future__ import annotations


class MongrateError(Exception):
    """Base class: ``str(exc)`` is the one-line message; ``exit_code`` the CLI's code."""

    exit_code = 2


class ConfigError(MongrateError):
    """mongrate.ini missing, unreadable or incomplete, or a bad command-line value."""


class ConnectionFailure(MongrateError):
    """The server could not be reached or refused the credentials."""


class ScriptError(MongrateError):
    """A revision file cannot be loaded (syntax error, missing attribute, bad value)."""


class GraphError(MongrateError):
    """The revision graph is broken (cycle, duplicate id, dangling parent)."""


class RevisionNotFoundError(GraphError):
    """A target names no revision."""


class AmbiguousRevisionError(GraphError):
    """A partial id matches several revisions."""


class MultipleHeadsError(GraphError):
    """One head was needed and there are several."""


class RangeError(GraphError):
    """A relative step walks past base or head, or a target is unreachable from here."""


class LockTimeoutError(MongrateError):
    """Another run held the lock for longer than ``--lock-timeout``."""

    exit_code = 3


class LockLostError(MongrateError):
    """Our lease expired and someone else took the lock: stop before writing more."""

    exit_code = 3


class RevisionFailed(MongrateError):
    """A revision's upgrade or downgrade raised; its log entry says ``failed``."""

    exit_code = 1


class CheckFailed(MongrateError):
    """``mongrate check`` found something to act on, ``problems`` one line each (none when
    the message is all there is, e.g. ``unlock`` refusing a live lease)."""

    exit_code = 1

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = list(problems or ())


class ServerLost(MongrateError):
    """The server stopped answering in the middle of a run; the next run resumes it."""

    exit_code = 4


class RunInterrupted(MongrateError):
    """An earlier run died in a step this command would not re-run."""

    exit_code = 1


class BackupError(MongrateError):
    """A backup could not be verified or restored."""

    exit_code = 1


class OpError(MongrateError):
    """A revision used an op helper wrongly (the message says how to fix it)."""

    exit_code = 1


class StepCancelled(MongrateError):
    """A step run by ``op.parallel`` stopped because another step failed."""

    exit_code = 1


class RewriteError(MongrateError):
    """A collection rewrite could not be completed safely; the live collection is left as
    it was."""

    exit_code = 1


class UnsettledSwap(RewriteError):
    """A swap cut short left collections that cannot say which copy is complete: nothing
    is dropped, and the run stops."""


class OrderError(RewriteError):
    """Documents did not come in the order a merge join needs."""

    def __init__(self, message: str, *, collection: str = ""):
        super().__init__(message)
        self.collection = collection


class BackupNotFound(MongrateError):
    """No such backup or snapshot: a usage error."""


class CapabilityError(OpError):
    """An op needs something this server cannot do (e.g. validators on FerretDB 1.x);
    raised before anything is written."""


class FleetFailed(MongrateError):
    """A command run on several databases did not succeed on all of them."""

    exit_code = 1


class SchemaError(ConfigError):
    """schema.yaml is unreadable or invalid; the message names file, line and key."""


class DatabaseBehind(MongrateError):
    """Autogenerate needs the database at the revisions' head (as Alembic's "Target
    database is not up to date")."""


# -- the update evaluator (mongrate.mongo.update): never shown to users as they are; the
# engine turns an UpdateError into an OpError naming the collection, and answers an
# UnsupportedUpdate by letting the server apply the update.


class UpdateError(ValueError):
    """MongoDB would reject this update (for this document); the message is one line."""


class UnsupportedUpdate(Exception):
    """The evaluator cannot guarantee MongoDB's result: let the server apply the update."""
