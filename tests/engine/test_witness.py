"""The rewrite's check before its swap: the server's command counters instead of a second
read where they prove that nobody else wrote (mongrate/mongo/witness.py), the re-read
otherwise; a write to the live collection is never swapped away either way."""

from __future__ import annotations

import pytest
from pymongo import MongoClient, monitoring
from pymongo.errors import OperationFailure

from mongrate.errors import RewriteError
from mongrate.mongo.witness import CommandTally, WriteWitness, tally_of
from mongrate.testing.kit import revision_op


class Reads(monitoring.CommandListener):
    """Counts the ``find`` commands naming one collection."""

    def __init__(self, collection: str):
        self.collection = collection
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == self.collection:
            self.count += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
def engine_db(mongo_url, mongo_db):
    """``mongo_db`` through a client of its own that has the tally (as mongrate's CLI makes
    it) and counts the reads of ``msgs``."""
    reads = Reads("msgs")
    client = MongoClient(mongo_url, event_listeners=[CommandTally(), reads])
    db = client[mongo_db.name]
    db.reads = reads  # type: ignore[attr-defined]
    mongo_db.msgs.insert_many([{"_id": i, "n": i, "grp": i % 4, "text": "x" * 100}
                               for i in range(40)])
    yield db
    client.close()


@pytest.fixture
def app(mongo_url):
    """The application: its own client, as a separate process would have."""
    client = MongoClient(mongo_url)
    yield client
    client.close()


def counts_commands(db) -> bool:
    """The server answers serverStatus with counters it increments once a command is
    answered (FerretDB); mongo-java-server keeps none."""
    return "ferretdbVersion" in db.client.admin.command("serverStatus")


def rewrite(db, change, revision: str = "r1") -> None:
    with revision_op(db, revision, write_strategy="rewrite", batch_size=7, defer=False) as op:
        op.change_each("msgs", change)


def test_a_quiet_rewrite_reads_the_collection_once_where_the_server_counts_commands(engine_db):
    def change(doc):
        doc["v"] = 2

    rewrite(engine_db, change)
    assert engine_db.msgs.count_documents({"v": 2}) == 40
    assert engine_db.reads.count == (1 if counts_commands(engine_db) else 2)


def test_a_quiet_group_pass_reads_each_collection_once(engine_db):
    engine_db.users.insert_many([{"_id": g} for g in range(4)])

    def count(grp, msgs, users):
        for m in msgs:
            m["v"] = 2
        for u in users:
            u["count"] = len(msgs)

    with revision_op(engine_db, "r1", write_strategy="rewrite", batch_size=7,
                     defer=False) as op:
        op.change_groups(count, msgs=op.source("msgs", key="grp"),
                         users=op.source("users", key="_id"))
    assert engine_db.msgs.count_documents({"v": 2}) == 40
    assert engine_db.reads.count == (1 if counts_commands(engine_db) else 2)


def test_a_collection_one_batch_holds_is_simply_read_again(engine_db):
    """Two status calls cost more than reading a one-batch collection again."""
    with revision_op(engine_db, "r1", write_strategy="rewrite", batch_size=100,
                     defer=False) as op:
        op.update_many("msgs", {}, {"$set": {"v": 2}})
    assert engine_db.msgs.count_documents({"v": 2}) == 40
    assert engine_db.reads.count == 2


def test_our_own_writes_to_other_collections_keep_it_quiet(engine_db):
    """The revision's own writes elsewhere (through mongrate's client) are ours."""
    def change(doc):
        engine_db.audit.insert_one({"seen": doc["_id"]})
        doc["v"] = 2

    rewrite(engine_db, change)
    assert engine_db.audit.count_documents({}) == 40
    assert engine_db.reads.count == (1 if counts_commands(engine_db) else 2)


def test_a_write_by_another_client_anywhere_sends_it_to_the_re_read(engine_db, app):
    """Another client wrote to another database: the counters cannot say where, so the
    collection is read again; unchanged, it is swapped."""
    other = app[f"{engine_db.name}_elsewhere"]

    def change(doc):
        if doc["_id"] == 5:
            other.notes.insert_one({"n": 1})
        doc["v"] = 2

    try:
        rewrite(engine_db, change)
    finally:
        app.drop_database(other.name)
    assert engine_db.msgs.count_documents({"v": 2}) == 40
    assert engine_db.reads.count == 2


@pytest.mark.parametrize("writer", ["ours", "app"])
def test_an_update_to_the_live_collection_is_never_swapped_away(engine_db, app, writer):
    """Through mongrate's own client or another, a write to the collection being rewritten
    stops the swap: the collection is as the writer left it."""
    live = (engine_db if writer == "ours" else app[engine_db.name]).msgs

    def change(doc):
        if doc["_id"] == 20:  # one the scan has read: its copy would be the old one
            live.update_one({"_id": 0}, {"$set": {"n": -30}})
        doc["v"] = 2

    with pytest.raises(RewriteError, match="stop the application's writers"):
        rewrite(engine_db, change)
    assert engine_db.msgs.find_one({"_id": 0})["n"] == -30
    assert engine_db.msgs.count_documents({"v": 2}) == 0


def test_the_witness_needs_the_tally_and_counters_the_server_keeps(engine_db, mongo_db, app):
    assert WriteWitness.begin(mongo_db.client[mongo_db.name + "_x"], "msgs") is not None \
        or not counts_commands(engine_db)  # the test servers' clients carry a tally
    assert WriteWitness.begin(app[engine_db.name], "msgs") is None  # no tally on it
    witness = WriteWitness.begin(engine_db, "msgs")
    if not counts_commands(engine_db):
        assert witness is None
        return
    engine_db.other.insert_one({"a": 1})
    assert witness.quiet()
    witness = WriteWitness.begin(engine_db, "msgs")  # another pass's swap, say
    engine_db.other.rename("other2")
    engine_db.other2.rename("other")
    assert witness.quiet()
    witness = WriteWitness.begin(engine_db, "msgs")
    engine_db.msgs.insert_one({"_id": "new"})
    assert not witness.quiet()
    witness = WriteWitness.begin(engine_db, "msgs")
    engine_db.other.rename("msgs_old")  # a rename naming it (from or to) is not harmless
    engine_db.msgs_old.rename("other")
    engine_db.msgs.rename("msgs_x")
    engine_db.msgs_x.rename("msgs")
    assert not witness.quiet()
    witness = WriteWitness.begin(engine_db, "msgs")
    app[engine_db.name].other.insert_one({"a": 2})
    assert not witness.quiet()
    witness = WriteWitness.begin(engine_db, "msgs")
    with pytest.raises(OperationFailure):  # a failed command of ours is not counted as ours:
        engine_db.command({"insert": "other", "documents": [{"a": 3}], "ordered": "no"})
    # the server counted it
    assert not witness.quiet()


def test_no_witness_stays_open_after_a_pass(engine_db, app):
    """Whatever the pass ends in (nothing changed, swapped, refused), its witness is
    closed: an open one would make every later command of the client count for it."""
    tally = tally_of(engine_db.client)

    def nothing(doc):
        pass

    rewrite(engine_db, nothing)
    assert tally.watching == 0

    def change(doc):
        doc["v"] = 2

    rewrite(engine_db, change, "r2")
    assert engine_db.msgs.count_documents({"v": 2}) == 40
    assert tally.watching == 0

    seen = []

    def racing(doc):
        seen.append(doc["_id"])
        if len(seen) == 30:  # one the scan has read (this collection's order is the copy's)
            app[engine_db.name].msgs.update_one({"_id": seen[0]}, {"$set": {"n": -1}})
        doc["v"] = 3

    with pytest.raises(RewriteError):
        rewrite(engine_db, racing, "r3")
    assert tally.watching == 0
