"""Kill a mongrate command at every write it sends, and check that nothing is lost.

A run is recorded once, uninterrupted: every write command the driver sends (pymongo
command monitoring inside the process: inserts, updates, deletes, findAndModify,
collection and index creation and removal, renames, aggregations writing with ``$out`` or
``$merge``) is listed. Then, for each write in turn, the database is put back as it was
before the command, the real command runs again in a child process and is killed with
SIGKILL from inside the driver just before that write is sent (or just after its reply
came), and the same command is run again to completion (for a command that fails in the
clean run, also the one an operator runs next). What it leaves must equal the
uninterrupted run byte for byte: every user collection's documents (raw BSON: field order
and types included) and indexes, mongrate's recorded prior values, its heads and pass
states, which collections exist, the exit code, and what ``mongrate check`` says.

Children are forked from one helper process that has imported mongrate already (a
hundred kill points would otherwise spend most of their time importing), and each fork
creates its own client. The lease lock a killed child leaves is released with
``mongrate unlock --force``, as an operator who saw the run die would; the commands that
are not killed run in this process.

    with KillPoints(project_dir, ini, db) as kp:
        clean = kp.record([["upgrade", "head"], ["downgrade", "base"]])
        bad = [p for p in kp.points(clean) if kp.try_point(clean, p)]
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.database import Database

from mongrate.mongo.codec import RAW

#: Commands that change what a database holds (``aggregate`` only with ``$out``/``$merge``).
WRITE_COMMANDS = frozenset({
    "insert", "update", "delete", "findAndModify", "create", "drop", "dropDatabase",
    "renameCollection", "createIndexes", "dropIndexes", "collMod", "bulkWrite",
    "convertToCapped", "cloneCollectionAsCapped", "applyOps",
})


def write_target(command_name: str, command: dict[str, Any]) -> str | None:
    """The namespace a command writes to (a collection name, or ``db.collection`` for a
    rename), or None if the command writes nothing."""
    if command_name == "aggregate":
        pipeline = command.get("pipeline") or []
        last = pipeline[-1] if pipeline else {}
        if not isinstance(last, dict) or not ({"$out", "$merge"} & set(last)):
            return None
    elif command_name not in WRITE_COMMANDS:
        return None
    target = command.get(command_name)
    return target if isinstance(target, str) else ""


@dataclass(frozen=True)
class Write:
    """One write a command sent: its number in the run (from 1), command and target."""

    n: int
    command: str
    target: str

    def __str__(self) -> str:
        return f"#{self.n} {self.command} {self.target}".rstrip()


@dataclass(frozen=True)
class KillAt:
    """Where to kill a run: at its ``write``-th write, ``before`` it is sent or ``after``
    its reply came; or at the ``nth`` write whose ``command target`` matches ``match`` (a
    regular expression, searched)."""

    write: int | None = None
    when: str = "before"
    match: str | None = None
    nth: int = 1

    def __post_init__(self) -> None:
        if self.when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', not {self.when!r}")
        if (self.write is None) == (self.match is None):
            raise ValueError("KillAt takes a write number or a match, one of them")

    def __str__(self) -> str:
        where = f"write #{self.write}" if self.write is not None else f"/{self.match}/"
        return f"{self.when} {where}"


# ------------------------------------------------------------------ in the child
def _install_listener(kill: KillAt | None, log_path: str, ignore: Sequence[str]) -> None:
    """Register (for every client made from now on) a listener that appends each write to
    ``log_path`` and SIGKILLs the process at ``kill``."""
    from pymongo import monitoring

    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    ignored = set(ignore)

    def die() -> None:
        log.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    class Listener(monitoring.CommandListener):
        def __init__(self) -> None:
            self.count = 0
            self.matched = 0
            self.pending: dict[tuple[int, Any], tuple[Write, bool]] = {}
            self.lock = threading.Lock()  # writes come from the background writer too

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = write_target(event.command_name, event.command)
            if target is None or target in ignored:
                return
            with self.lock:
                self.count += 1
                write = Write(self.count, event.command_name, target)
                log.write(json.dumps([write.n, write.command, write.target]) + "\n")
                hit = kill is not None and self._hit(write)
            if hit and kill.when == "before":
                die()
            self.pending[(event.request_id, event.connection_id)] = (write, hit)

        def _hit(self, write: Write) -> bool:
            if kill.write is not None:
                return write.n == kill.write
            if re.search(kill.match, f"{write.command} {write.target}") is None:
                return False
            self.matched += 1
            return self.matched == kill.nth

        def _done(self, event) -> None:
            _, hit = self.pending.pop((event.request_id, event.connection_id), (None, False))
            if hit:
                die()

        succeeded = failed = _done

    monitoring.register(Listener())


def _child(request: dict[str, Any]) -> None:
    """Run one command in this (forked) process and leave with its exit code."""
    code = 1
    try:
        os.chdir(request["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)  # the helper's requests are not its input
        os.dup2(devnull, 0)
        os.close(devnull)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.environ.update(request.get("env") or {})
        kill = KillAt(**request["kill"]) if request.get("kill") else None
        _install_listener(kill, request["writes"], request.get("ignore") or ())
        from mongrate.cli import main

        try:
            main(request["argv"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - said on the child's stderr, then exit 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The helper process: read one JSON request a line, fork a child that runs it, answer
    its exit code. Imports mongrate's command modules first so that every child has them."""
    import mongrate.cli  # noqa: F401
    import mongrate.commands  # noqa: F401
    import mongrate.commands.inspect  # noqa: F401
    import mongrate.commands.migrate  # noqa: F401
    import mongrate.operations.ops  # noqa: F401
    import mongrate.runtime.runner  # noqa: F401

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    print(json.dumps({"ready": True}), file=channel)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), file=channel)


# ------------------------------------------------------------------ in the test
@dataclass
class Outcome:
    """What one command did: exit code (-9: killed), output, and the writes it sent."""

    argv: list[str]
    code: int
    out: str
    err: str
    writes: list[Write]

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL


class ChildRunner:
    """Runs ``mongrate`` commands in children forked from one pre-imported helper."""

    def __init__(self, cwd: str | os.PathLike, *, ignore: Sequence[str] = ("mongrate_lock",),
                 env: dict[str, str] | None = None):
        self.cwd = str(cwd)
        self.ignore = list(ignore)  # the lock's lease renewals come at times of their own
        self.env = dict(env or {})
        self._tmp = tempfile.TemporaryDirectory(prefix="mongrate-kill-")
        root = str(Path(__file__).resolve().parents[2])
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from mongrate.testing.killpoints import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env,
            cwd=self.cwd)
        self._answer()

    def _answer(self) -> dict[str, Any]:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the kill-point helper process died")
        return json.loads(line)

    def run(self, argv: Sequence[str], *, kill: KillAt | None = None) -> Outcome:
        base = Path(self._tmp.name)
        paths = {k: str(base / k) for k in ("out", "err", "writes")}
        Path(paths["writes"]).write_text("")
        request = {"argv": list(argv), "cwd": self.cwd, "env": self.env,
                   "ignore": self.ignore, **paths,
                   "kill": None if kill is None else {"write": kill.write, "when": kill.when,
                                                      "match": kill.match, "nth": kill.nth}}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        code = self._answer()["code"]
        writes = [Write(*json.loads(line)) for line in
                  Path(paths["writes"]).read_text().splitlines() if line]
        return Outcome(list(argv), code, Path(paths["out"]).read_text(),
                       Path(paths["err"]).read_text(), writes)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
        self._tmp.cleanup()

    def __enter__(self) -> ChildRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _indexes(db: Database, name: str) -> dict[str, dict[str, Any]]:
    return {index: {k: v for k, v in spec.items() if k not in ("v", "ns", "background")}
            for index, spec in db[name].index_information().items()}


@dataclass
class DatabaseImage:
    """A database held in memory, to put back as it was: each collection's options,
    indexes, and documents as raw BSON in stored order."""

    collections: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]], list[bytes]]]

    @classmethod
    def capture(cls, db: Database) -> DatabaseImage:
        out = {}
        for info in db.list_collections():
            name = info["name"]
            docs = [bytes(d.raw) for d in db.get_collection(name, codec_options=RAW).find()]
            out[name] = (dict(info.get("options") or {}), _indexes(db, name), docs)
        return cls(out)

    def restore(self, db: Database, current: DatabaseImage | None = None) -> None:
        """Make ``db`` hold exactly this image; collections already equal are left alone
        (writes are what a test server is slow at). ``current``: what ``db`` holds, if
        known (it is then not read)."""
        from bson.raw_bson import RawBSONDocument

        now = current or DatabaseImage.capture(db)
        for name in now.collections:
            if name not in self.collections:
                db.drop_collection(name)
        for name, image in self.collections.items():
            options, indexes, docs = image
            there = now.collections.get(name)
            if there == image:
                continue
            coll = db.get_collection(name, codec_options=RAW)
            if there is not None and there[:2] == image[:2]:
                coll.delete_many({})
            else:
                if there is not None:
                    db.drop_collection(name)
                db.create_collection(name, **options)
                for index, spec in indexes.items():
                    if index != "_id_":
                        spec = dict(spec)
                        db[name].create_index(spec.pop("key"), name=index, **spec)
            if docs:
                coll.insert_many([RawBSONDocument(d, RAW) for d in docs])


def mongrate_state(image: DatabaseImage, *, undo: str = "mongrate_undo",
                   version: str = "mongrate_version") -> dict[str, Any]:
    """What a run leaves that must not depend on where it was interrupted: every user
    collection (raw documents sorted, indexes; as :func:`mongrate.testing.kit.snapshot`
    sees them), the recorded prior values (side collections, byte for byte), the pass
    states, the heads, and which collections exist (scratch copies and side collections
    included; the log and the lock are left out)."""
    import bson

    from mongrate.names import OwnNames

    own = OwnNames(undo=undo, version=version)

    colls = image.collections
    names = sorted(colls)
    data = {}
    for n in names:
        _, indexes, docs = colls[n]
        if not ((o := own.classify(n)) and o.bookkeeping) and (docs or set(indexes) - {"_id_"}):
            data[n] = {"docs": sorted(docs), "indexes": indexes}
    passes = sorted(tuple(str(d.get(k)) for k in ("revision", "collection", "kind", "doc_id",
                                                   "state"))
                    for d in map(bson.decode, colls.get(undo, ({}, {}, []))[2]))
    return {
        "collections": [n for n in names if n not in ("mongrate_log", "mongrate_lock")],
        "data": data,
        "side": {n: sorted(colls[n][2]) for n in names if n.startswith(f"{undo}_")},
        "passes": passes,
        "heads": sorted(bson.decode(d)["_id"] for d in colls.get(version, ({}, {}, []))[2]),
    }


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Short descriptions of where two :func:`mongrate_state` results differ."""
    out = []
    for key in want:
        if want[key] == got.get(key):
            continue
        if key == "data":
            names = sorted(set(want[key]) | set(got[key]))
            for n in names:
                a, b = want[key].get(n), got[key].get(n)
                if a == b:
                    continue
                if a is None or b is None:
                    out.append(f"collection {n} {'missing' if b is None else 'unexpected'}")
                elif a["indexes"] != b["indexes"]:
                    out.append(f"{n}: indexes differ")
                else:
                    gone = len(set(a["docs"]) - set(b["docs"]))
                    out.append(f"{n}: {len(b['docs'])} documents (want {len(a['docs'])}), "
                               f"{gone} of the wanted ones not there byte for byte")
        elif key == "side":
            for n in sorted(set(want[key]) | set(got[key])):
                a, b = want[key].get(n), got[key].get(n)
                if a != b:
                    gone = "absent" if b is None else (
                        f"{len(b)} records (want {len(a or ())}), "
                        f"{len(set(a or ()) - set(b))} of the wanted ones not there")
                    out.append(f"recorded prior values {n}: {gone}")
        elif key == "collections":
            missing = sorted(set(want[key]) - set(got[key]))
            extra = sorted(set(got[key]) - set(want[key]))
            out.append(f"collections: missing {missing}, extra {extra}")
        else:
            out.append(f"{key} differ: want {_short(want[key])}, got {_short(got[key])}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


@dataclass
class CleanRun:
    """The uninterrupted run of a command sequence: per command, the database before it,
    its outcome, and what it and ``check`` left."""

    commands: list[list[str]]
    templates: list[DatabaseImage]
    outcomes: list[Outcome]
    states: list[dict[str, Any]]
    checks: list[tuple[int, str]]


@dataclass(frozen=True)
class Point:
    """A kill point: command ``command`` of a sequence, killed at ``kill``."""

    command: int
    kill: KillAt
    write: Write

    def __str__(self) -> str:
        return f"command {self.command} {self.kill.when} {self.write}"


@dataclass
class KillPoints:
    """Kill-point testing of command sequences on one database (the ini's)."""

    cwd: str | os.PathLike
    ini: str | os.PathLike
    db: Database
    state: Callable[[DatabaseImage], dict[str, Any]] = mongrate_state
    #: what a line of ``check`` may hold that differs between equal states
    normalize: Callable[[str], str] = field(default=lambda text: re.sub(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|pid \d+", "#", text))
    _runner: ChildRunner | None = None
    _current: DatabaseImage | None = None  # what the database holds, while nothing wrote

    def __enter__(self) -> KillPoints:
        self._runner = ChildRunner(self.cwd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.close()

    def run(self, *args: str, kill: KillAt | None = None) -> Outcome:
        """The command in a forked child (killed at ``kill``), its writes listed."""
        assert self._runner is not None, "use KillPoints as a context manager"
        return self._runner.run(["-c", str(self.ini), *args], kill=kill)

    def run_here(self, *args: str) -> Outcome:
        """The command in this process (quicker than a child; its writes are not listed)."""
        import contextlib
        import io

        from mongrate.cli import main

        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(["-c", str(self.ini), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os.chdir(cwd)
        return Outcome(list(args), code, out.getvalue(), err.getvalue(), [])

    def check(self) -> tuple[int, str]:
        r = self.run_here("check")
        return r.code, self.normalize(r.err)

    def record(self, commands: Sequence[Sequence[str]]) -> CleanRun:
        """Run ``commands`` uninterrupted, keeping the database as it was before each."""
        clean = CleanRun([list(c) for c in commands], [], [], [], [])
        for command in clean.commands:
            clean.templates.append(DatabaseImage.capture(self.db))
            outcome = self.run(*command)
            clean.outcomes.append(outcome)
            clean.states.append(self.state(DatabaseImage.capture(self.db)))
            clean.checks.append(self.check())
        return clean

    def points(self, clean: CleanRun, *, before: bool = True, after: bool = True,
               commands: Iterable[int] | None = None) -> Iterator[Point]:
        """Kill points of ``clean``: each write of each command, before and/or after."""
        for k in (range(len(clean.commands)) if commands is None else commands):
            for write in clean.outcomes[k].writes:
                for when, wanted in (("before", before), ("after", after)):
                    if wanted:
                        yield Point(k, KillAt(write.n, when), write)

    def try_point(self, clean: CleanRun, point: Point, *, follow: bool = False) -> list[str]:
        """Run ``clean``'s command killed at ``point``, then run it again to completion;
        what differs from the clean run (empty: nothing).

        The commands after it are not run (``follow`` runs them): they would start from the
        same database as in the clean run, which is what is compared. A command that
        failed in the clean run is the exception: what it had begun writing when it
        stopped depends on timing (a batch handed to the background writer may or may not
        be sent), so its exit code is compared, and everything else after the next
        command that succeeds (the one an operator runs to take it back)."""
        k = point.command
        failed = clean.outcomes[k].code != 0
        clean.templates[k].restore(self.db, self._current)
        self._current = None
        killed = self.run(*clean.commands[k], kill=point.kill)
        if not killed.killed and not failed:
            return [f"the kill did not land (exit {killed.code}): the run sent other writes "
                    f"than the recorded one: {[str(w) for w in killed.writes[-3:]]}"]
        sent = [(w.command, w.target) for w in killed.writes]
        want = [(w.command, w.target) for w in clean.outcomes[k].writes[:point.kill.write]]
        if sent != want and not failed:
            return [f"the killed run's writes differ from the recorded run's: "
                    f"{sent[-2:]} vs {want[-2:]}"]
        if killed.killed:
            self.run_here("unlock", "--force")  # as an operator who saw the run die would
        problems: list[str] = []
        for j in range(k, len(clean.commands)):
            outcome = self.run_here(*clean.commands[j])
            name = " ".join(clean.commands[j])
            want_code = clean.outcomes[j].code
            if outcome.code != want_code:
                said = (outcome.err.strip().splitlines() or [""])[-1]
                problems.append(f"{name}: exit {outcome.code} (want {want_code}): {said}")
                break
            if want_code != 0 and j < len(clean.commands) - 1:
                continue  # compared where the next command lands
            self._current = DatabaseImage.capture(self.db)  # check writes nothing
            problems += [f"after {name}: {d}"
                         for d in differences(clean.states[j], self.state(self._current))]
            if outcome.code == 0:
                tmp = [n for n in self._current.collections if n.startswith("mongrate_tmp_")]
                if tmp:
                    problems.append(f"after {name} (exit 0): scratch copies left: {tmp}")
            code, text = self.check()
            if (code, text) != clean.checks[j]:
                problems.append(f"check after {name}: exit {code}, {text.strip()!r} "
                                f"(want exit {clean.checks[j][0]}, "
                                f"{clean.checks[j][1].strip()!r})")
            if problems or not follow:
                break
        return problems


__all__ = ["ChildRunner", "CleanRun", "KillAt", "KillPoints", "Outcome", "Point", "Write",
           "DatabaseImage", "differences", "mongrate_state", "serve", "write_target"]
