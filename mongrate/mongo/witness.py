"""Did anyone but us write to the server while a pass read a collection? Asked of the
server's command counters instead of reading the collection again.

A rewrite pass copies a collection and swaps the copy in; a write the application made
to the live collection meanwhile would be lost with the swap, so the pass must know that
none happened. Reading the whole collection again and comparing checksums answers that,
at the cost of a second full read. Where the server counts every command it has answered
(``serverStatus`` ``metrics.commands``; FerretDB counts a command once its answer is
ready, so a write is counted only after it is applied), a cheaper proof exists:

1. ``T0``: the counters, read before the pass opens its cursor;
2. meanwhile, our client's :class:`CommandTally` notes each command it started after
   ``T0``'s answer came back and whose answer came back before ``T1`` is asked, with the
   collections it names (one for insert/update/delete/findAndModify/create/drop and the
   index commands, both for a rename, none for an aggregation without ``$out``/``$merge``);
3. ``T1``: the counters again. If every command that could write (any command not known
   to be read-only) grew by exactly the number of such commands of ours that name
   another collection than the live one, nothing else wrote anywhere on the server, so
   the live collection is as the pass read it.

What is counted of ours is a lower bound of what the server counted of ours in the
window, so a mismatch only ever means "cannot tell" (the caller reads again), never a
false "quiet". A write of ours to the live collection (a revision writing through the
client itself) is not counted as ours, so it, too, sends the caller to the re-read.
MongoDB counts a command when it starts, before it is applied; a write counted before
``T0`` could then land during the pass unseen, so only the server whose counting we have
read to be at the answer (FerretDB 1.x) gets the proof; the others are read again.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from pymongo import monitoring

#: commands that never change a document (lower case); any other command counts as a
#: possible write, so an unknown one only costs the re-read
READ_ONLY = frozenset({
    "find", "getmore", "count", "distinct", "listcollections", "listindexes",
    "listdatabases", "serverstatus", "hello", "ismaster", "ping", "buildinfo",
    "getparameter", "killcursors", "endsessions", "connectionstatus", "collstats",
    "dbstats", "datasize", "explain", "getlog", "hostinfo", "whatsmyuri", "getcmdlineopts",
    "saslstart", "saslcontinue", "authenticate", "getnonce", "logout", "listcommands",
    "getfreemonitoringstatus", "currentop", "validate", "getlasterror",
    # FerretDB 1.x's label for a request in OP_QUERY (a new connection's handshake, which
    # pymongo 4.6 sends so; FerretDB answers only hello/isMaster/saslStart/saslContinue
    # there) or a legacy opcode (OP_INSERT...: refused unread): never a write
    "unknown",
})
#: write commands whose first value is the one collection they write (in their database)
NAMED_TARGET = frozenset({"insert", "update", "delete", "findandmodify", "create",
                          "createindexes", "dropindexes", "drop"})


class CommandTally(monitoring.CommandListener):
    """Counts, for each :class:`WriteWitness` open on this client, the write commands the
    client sent and had answered within the witness's window, by name, leaving out those
    naming the watched collection. Install with ``MongoClient(event_listeners=[...])``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        #: (connection, request) -> (start number, name, the namespaces it may write)
        self._started: dict[tuple[Any, int], tuple[int, str, Touched]] = {}
        self._open: list[WriteWitness] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name.lower()
        if not self._open or name in READ_ONLY:
            return
        touched = _touched(name, event.database_name, event.command.get(event.command_name),
                           event.command)
        with self._lock:
            self._seq += 1
            self._started[(event.connection_id, event.request_id)] = (self._seq, name, touched)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finish(event, ok=True)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event, ok=False)

    def _finish(self, event: Any, *, ok: bool) -> None:
        if not self._started:
            return
        with self._lock:
            entry = self._started.pop((event.connection_id, event.request_id), None)
            if entry is None or not ok:  # a failure may or may not have been counted: ours
                return                   # must be a lower bound, so it is left out
            seq, name, touched = entry
            if touched is None:  # cannot tell what it wrote: not provably harmless
                return
            for witness in self._open:
                if seq > witness.mark and witness.watched not in touched:
                    witness.ours[name] += 1

    @property
    def watching(self) -> int:
        """How many witnesses are open (each one costs every command a little)."""
        return len(self._open)

    def open(self, witness: WriteWitness) -> None:
        """Count for ``witness`` the commands started from now on."""
        with self._lock:
            witness.mark = self._seq
            self._open.append(witness)

    def close(self, witness: WriteWitness) -> Counter[str]:
        """Stop counting for ``witness``; what was counted."""
        with self._lock:
            if witness in self._open:
                self._open.remove(witness)
            return Counter(witness.ours)


#: the (database, collection) pairs a command may write; None: cannot tell
Touched = frozenset[tuple[str, str]] | None


def _touched(name: str, database: str, first: Any, command: Any) -> Touched:
    """What a write command of ours may change, read from the command itself."""
    if name in NAMED_TARGET:
        return frozenset({(database, first)}) if isinstance(first, str) else None
    if name == "aggregate":  # a read (count_documents, $collStats...) changes nothing
        return None if _writes(command.get("pipeline")) else frozenset()
    if name == "renamecollection":  # "db.from" to "db.to": both change
        names = (first, command.get("to"))
        if not all(isinstance(n, str) and "." in n for n in names):
            return None
        return frozenset(tuple(n.split(".", 1)) for n in names)  # type: ignore[misc]
    return None


def _writes(pipeline: Any) -> bool:
    """Whether an aggregation pipeline writes (``$out``/``$merge``), or cannot be told."""
    if not isinstance(pipeline, list):
        return True
    return any(not isinstance(stage, dict) or "$out" in stage or "$merge" in stage
               for stage in pipeline)


def tally_of(client: Any) -> CommandTally | None:
    """The :class:`CommandTally` installed on ``client``, if any."""
    options = getattr(client, "options", None)
    for listener in getattr(options, "event_listeners", None) or ():
        if isinstance(listener, CommandTally):
            return listener
    return None


def _write_counters(client: Any) -> dict[str, int] | None:
    """The server's answered-command counters of every command that could write, by lower
    case name; None where the server keeps none we can trust (see the module text)."""
    status = client.admin.command("serverStatus")
    commands = (status.get("metrics") or {}).get("commands")
    if "ferretdbVersion" not in status or not isinstance(commands, dict):
        return None
    # read in FerretDB 1.24's source (clientconn/conn.go counts in route's deferred call);
    # a 2.x may count otherwise (our test build says "unknown": a 1.x)
    major = str(status["ferretdbVersion"]).lstrip("v").split(".")[0]
    if major.isdigit() and int(major) >= 2:
        return None
    counts: Counter[str] = Counter()
    for name, figures in commands.items():
        if name.lower() in READ_ONLY or not isinstance(figures, dict):
            continue
        counts[name.lower()] += int(figures.get("total") or 0)
    return dict(counts)


class WriteWitness:
    """Watches ``collection`` of ``db`` from :meth:`begin` to :meth:`quiet`."""

    def __init__(self, tally: CommandTally, client: Any, watched: tuple[str, str],
                 before: dict[str, int]):
        self.tally = tally
        self.client = client
        self.watched = watched
        self.before = before
        self.mark = 0
        self.ours: Counter[str] = Counter()

    @classmethod
    def begin(cls, db: Any, collection: str) -> WriteWitness | None:
        """Start watching (before the pass's first read); None where no proof is possible:
        the client has no :class:`CommandTally`, or the server keeps no usable counters."""
        client = db.client
        tally = tally_of(client)
        if tally is None:
            return None
        try:
            before = _write_counters(client)
        except Exception:  # noqa: BLE001 - no serverStatus (rights, server): read again
            return None
        if before is None:
            return None
        witness = cls(tally, client, (db.name, collection), before)
        tally.open(witness)  # after T0's answer: ours from here on
        return witness

    def quiet(self) -> bool:
        """True if only our own commands naming other collections wrote anywhere on the
        server since :meth:`begin`; False if anything else may have (or cannot tell)."""
        ours = self.tally.close(self)  # before T1 is asked: a lower bound
        try:
            after = _write_counters(self.client)
        except Exception:  # noqa: BLE001
            return False
        if after is None:
            return False
        for name in set(after) | set(self.before):
            grown = after.get(name, 0) - self.before.get(name, 0)
            if grown != ours.get(name, 0):
                return False
        return True

    def close(self) -> None:
        """Stop watching without an answer (the pass failed)."""
        self.tally.close(self)
