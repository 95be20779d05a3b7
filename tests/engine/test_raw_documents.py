"""Raw documents of any size and any buffer type, and dates outside Python's range, through
every codec path of the engine, on both write strategies.

pymongo 4.18+ hands raw documents of 4 KB or more over as ``memoryview`` slices of the
reply; older ones as ``bytes``. ``make test`` runs this file on the lowest and the newest
pymongo that setup.py allows."""

from __future__ import annotations

import bson
import pytest
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from mongrate.mongo.codec import RAW, decode
from mongrate.mongo.rawdoc import diff, elements, renamed, restored
from mongrate.testing.kit import revision_op, snapshot

BIG = 4096  # from here pymongo 4.18+ gives a raw document as a memoryview
FAR_PAST = DatetimeMS(-(2**62))  # a valid BSON date in year -146136543


@pytest.fixture(params=["rewrite", "in_place"])
def strategy(request) -> str:
    return request.param


def op_for(db, strategy, direction="upgrade"):
    return revision_op(db, "r1", direction, write_strategy=strategy, batch_size=3, defer=False)


def raw_of(db, name, _id) -> bytes:
    return bytes(db.get_collection(name, codec_options=RAW).find_one({"_id": _id}).raw)


# --- the pure functions, on every buffer type -------------------------------------------


@pytest.mark.parametrize("kind", [bytes, memoryview, bytearray])
@pytest.mark.parametrize("size", [10, 6000])
def test_rawdoc_functions_take_any_buffer(kind, size):
    doc = {"_id": 1, "a": "é" * size, "b": [1, {"c": "x"}], "d": FAR_PAST}
    raw = bson.encode(doc)
    buf = kind(raw)
    assert elements(buf) == elements(raw)
    assert all(type(e) is bytes for e in elements(buf).values())
    assert renamed(memoryview(elements(raw)["a"]), "z") == renamed(elements(raw)["a"], "z")
    after = {**decode(raw), "a": "short", "new": 1}
    change = diff(buf, after)
    assert change is not None and change == diff(raw, after)
    assert restored(kind(change.new), change.prior, change.absent, change.keys) == raw


def test_raw_bytes_copies_only_views():
    from mongrate.mongo.codec import raw_bytes

    raw = bson.encode({"a": "x" * 6000})
    assert raw_bytes(raw) is raw and raw_bytes(RawBSONDocument(raw)) is raw
    for buf in (memoryview(raw), bytearray(raw), RawBSONDocument(memoryview(raw))):
        assert type(raw_bytes(buf)) is bytes and raw_bytes(buf) == raw


# --- the helpers on the server ----------------------------------------------------------


@pytest.fixture
def long_docs(mongo_db):
    docs = [{"_id": i, "n": i, "content": "ʕ•ᴥ•ʔ 漢字 ☃ " * (40 * i + 1)} for i in range(12)]
    mongo_db.chat_messages.insert_many(docs)
    sizes = [len(raw_of(mongo_db, "chat_messages", i)) for i in range(12)]
    assert min(sizes) < BIG < max(sizes)
    return docs


def test_update_many_on_long_documents_round_trips(mongo_db, long_docs, strategy):
    before = snapshot(mongo_db)
    with op_for(mongo_db, strategy) as op:
        assert op.update_many("chat_messages", {}, {"$set": {"checked": True}}) == 12
        assert op.update_many("chat_messages", {"n": {"$gte": 6}},
                              {"$unset": {"content": ""}}) == 6
    assert mongo_db.chat_messages.count_documents({"content": {"$exists": False}}) == 6
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_change_each_on_long_documents_round_trips(mongo_db, long_docs, strategy):
    before = snapshot(mongo_db)

    def edit(doc):
        doc["content"] = doc["content"].replace("☃", "❄") + " (edited)"

    with op_for(mongo_db, strategy) as op:
        assert op.change_each("chat_messages", edit, filter={"n": {"$gte": 2}}) == 10
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_grow_past_4k_and_shrink_below_it_round_trip(mongo_db, strategy):
    small, large = "a" * 200, "b" * 6000
    mongo_db.things.insert_many([{"_id": "grows", "t": small, "z": 1},
                                 {"_id": "shrinks", "t": large, "z": 2}])
    before = snapshot(mongo_db)

    def flip(doc):
        doc["t"] = large if doc["_id"] == "grows" else small
        doc["added"] = "c" * 5000 if doc["_id"] == "grows" else None

    with op_for(mongo_db, strategy) as op:
        assert op.change_each("things", flip) == 2
    assert len(raw_of(mongo_db, "things", "grows")) > 2 * BIG
    assert len(raw_of(mongo_db, "things", "shrinks")) < BIG
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_a_revision_growing_documents_downgrades_through_the_cli(project, mongo_db, strategy):
    project.write_ini(write_strategy=strategy)
    mongo_db.notes.insert_many([{"_id": i, "body": "x" * 100} for i in range(5)])
    before = snapshot(mongo_db)
    project.add("aaaa1111", None, body_up="""
        op.change_each("notes", lambda d: {**d, "body": d["body"] * 80})
        op.update_many("notes", {"_id": {"$lt": 3}}, {"$set": {"more": "y" * 5000}})
    """)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert len(raw_of(mongo_db, "notes", 0)) > BIG
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before


# --- dates outside Python's range -------------------------------------------------------


@pytest.fixture
def plain_db(mongo_server_url, mongo_db):
    """The test database through a client with pymongo's default codec options (which
    cannot decode a date outside Python's range)."""
    client = MongoClient(mongo_server_url)
    yield client[mongo_db.name]
    client.close()


@pytest.fixture
def far_dates(mongo_db):
    mongo_db.events.insert_many([
        {"_id": FAR_PAST, "n": 1, "at": FAR_PAST},
        {"_id": DatetimeMS(2**62), "n": 2},
        {"_id": 3, "n": 3, "when": FAR_PAST},
        {"_id": 4, "n": 4},
    ])


@pytest.mark.parametrize("helper", ["update_many", "change_each"])
def test_filtered_helpers_take_dates_python_cannot_hold(plain_db, far_dates, strategy, helper):
    before = snapshot(plain_db)
    with op_for(plain_db, strategy) as op:
        if helper == "update_many":
            n = op.update_many("events", {"n": {"$lte": 3}}, {"$set": {"seen": True}})
        else:
            n = op.change_each("events", lambda d: d.update(seen=True),
                               filter={"n": {"$lte": 3}})
        assert n == 3
    assert plain_db.events.count_documents({"seen": True}) == 3
    with op_for(plain_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(plain_db) == before


def test_fleet_run_takes_dates_python_cannot_hold(project, mongo_client):
    """The fleet commands hand each run a database of their own client."""
    prefix = project.url.rsplit("/", 1)[1]
    names = [f"{prefix}_far_{i}" for i in range(2)]
    try:
        for name in names:
            mongo_client[name].events.insert_many([{"_id": FAR_PAST, "n": 1}, {"_id": 2, "n": 2}])
        project.add("aaaa1111", None, body_up="""
            op.update_many("events", {"n": 1}, {"$set": {"seen": True}})
            assert type(op.db.events.find_one({"n": 1})["_id"]).__name__ == "DatetimeMS"
        """)
        r = project.run("upgrade", "head", "--databases", f"{prefix}_far_*")
        assert r.code == 0, r.out + r.err
        assert [mongo_client[n].events.count_documents({"seen": True}) for n in names] == [1, 1]
    finally:
        for name in names:
            mongo_client.drop_database(name)


def test_cli_run_takes_dates_python_cannot_hold(project, mongo_db, far_dates, strategy):
    project.write_ini(write_strategy=strategy)
    before = snapshot(mongo_db)
    project.add("aaaa1111", None, body_up="""
        op.update_many("events", {"n": {"$gte": 2}}, {"$set": {"seen": True}})
        op.change_each("events", lambda d: d.update(k=1), filter={"n": {"$lte": 3}})
        assert type(op.db.events.find_one({"n": 1})["at"]).__name__ == "DatetimeMS"
    """)
    r = project.run("upgrade", "head")
    assert r.code == 0, r.err
    assert mongo_db.events.count_documents({"seen": True}) == 3
    r = project.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before
