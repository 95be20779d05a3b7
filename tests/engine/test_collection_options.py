"""A rewrite pass gives its copy the collection's creation options (capped size and max,
validator and its level and action, collation...), so the collection that replaces the
original is the same kind of collection, and a downgrade (a rewrite too) keeps them.

Capped collections are tested on FerretDB 1.24 (which records, but does not enforce, the
cap); validators, collations and views, which FerretDB 1.24 lacks, on MongoDB 7 where a
Docker engine answers.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from mongrate.errors import RewriteError
from mongrate.mongo.collections import collection_options
from mongrate.testing.kit import revision_op, snapshot

CAPPED = {"capped": True, "size": 1 << 20, "max": 500}

#: mongo-java-server has no capped collections (README: what each test server lacks)
NO_CAPPED = pytest.mark.skip_server("javaserver", reason="mongo-java-server has no capped "
                                    "collections")


def op_for(db, strategy, direction="upgrade", defer=False):
    return revision_op(db, "r1", direction, write_strategy=strategy, batch_size=4, defer=defer)


def grow_and_restore(db, name: str, strategy: str) -> None:
    before = snapshot(db)
    order = [d["_id"] for d in db[name].find()]
    with op_for(db, strategy) as op:
        assert op.update_many(name, {}, {"$set": {"note": "x" * 50}}) == 10
        op.change_each(name, lambda d: d.update(n2=d["n"] * 2))
    assert collection_options(db, name) == CAPPED
    assert [d["_id"] for d in db[name].find()] == order  # natural order kept
    with op_for(db, strategy, "downgrade") as down:
        down.restore_undo()
    assert collection_options(db, name) == CAPPED
    assert snapshot(db) == before
    assert [d["_id"] for d in db[name].find()] == order


@NO_CAPPED
@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
@pytest.mark.parametrize("name", ["events", "fs.events"])  # a dotted name is copied back
def test_a_capped_collection_stays_capped(mongo_db, strategy, name):
    mongo_db.create_collection(name, **CAPPED)
    mongo_db[name].insert_many([{"_id": 10 - i, "n": i} for i in range(10)])
    mongo_db[name].create_index("n", name="by_n")
    grow_and_restore(mongo_db, name, strategy)
    assert "by_n" in mongo_db[name].index_information()


@NO_CAPPED
def test_deferred_changes_to_a_capped_collection_keep_it_capped(mongo_db):
    mongo_db.create_collection("events", **CAPPED)
    mongo_db.events.insert_many([{"_id": i, "n": i} for i in range(10)])
    with op_for(mongo_db, "rewrite", defer=True) as op:
        op.update_many("events", {}, {"$inc": {"n": 1}})
        op.change_each("events", lambda d: d.update(seen=True))
    assert collection_options(mongo_db, "events") == CAPPED
    assert mongo_db.events.count_documents({"seen": True}) == 10


# -- MongoDB 7: what FerretDB 1.24 lacks ---------------------------------------------------------


@pytest.fixture
def mongo7_db(mongo7_url):
    client = MongoClient(mongo7_url, tz_aware=False)
    db = client["mongrate_options"]
    client.drop_database(db.name)
    yield db
    client.drop_database(db.name)
    client.close()


def test_validator_and_collation_survive_a_rewrite_on_mongo7(mongo7_db):
    db = mongo7_db
    options = {"validator": {"n": {"$type": "int"}}, "validationLevel": "moderate",
               "validationAction": "error",
               "collation": {"locale": "fr", "strength": 2}}
    db.create_collection("items", **options)
    db.items.insert_many([{"_id": i, "n": i, "s": "É" if i % 2 else "e"} for i in range(10)])
    before = snapshot(db)
    wanted = collection_options(db, "items")
    with op_for(db, "rewrite") as op:
        # with a collation the server compares the strings: it applies this update
        assert op.update_many("items", {}, {"$addToSet": {"tags": "x"}}) == 10
    assert collection_options(db, "items") == wanted
    with op_for(db, "rewrite", "downgrade") as down:
        down.restore_undo()
    assert collection_options(db, "items") == wanted
    assert snapshot(db) == before


def test_a_capped_collection_that_would_overflow_is_not_swapped_on_mongo7(mongo7_db):
    db = mongo7_db
    db.create_collection("log", capped=True, size=4096)
    db.log.insert_many([{"_id": i, "s": "x"} for i in range(20)])
    before = snapshot(db)
    with pytest.raises(RewriteError, match="is capped"), op_for(db, "rewrite") as op:
        op.update_many("log", {}, {"$set": {"s": "x" * 1000}})
    assert snapshot(db) == before
    assert collection_options(db, "log")["capped"] is True


def test_a_view_is_refused_before_anything_is_written_on_mongo7(mongo7_db):
    db = mongo7_db
    db.items.insert_one({"_id": 1})
    db.command({"create": "recent", "viewOn": "items", "pipeline": []})
    with pytest.raises(RewriteError, match="'viewOn'.*write_strategy = in_place"), \
            op_for(db, "rewrite") as op:
        op.change_each("recent", lambda d: d.update(x=1))
    assert db.mongrate_undo.count_documents({}) == 0
