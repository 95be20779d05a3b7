"""op.update_many and op.change_each on values the evaluator must treat as MongoDB does, or
hand to the server: new top-level field order, non-ASCII digits, and updates whose result
depends on the values (on ``rewrite`` the server applies those to the copy).

Each result is compared with what the server itself stores for the same update applied to
a copy of the same documents, on both write strategies, and each downgrade byte-exact.
"""

from __future__ import annotations

import pytest
from bson import ObjectId
from pymongo import monitoring

from mongrate.mongo.codec import RAW
from mongrate.testing.kit import revision_op, snapshot

#: MongoDB 5.0+ orders the fields an update adds; mongo-java-server adds them in the
#: update's order, as MongoDB 4.x did (README: what each test server lacks)
NEW_FIELD_ORDER = pytest.mark.skip_server(
    "javaserver", reason="adds new fields in the update's order (MongoDB 4.x), where these "
                         "tests pin MongoDB 5.0+'s order")


@pytest.fixture(params=["rewrite", "in_place"])
def strategy(request) -> str:
    return request.param


def op_for(db, strategy, direction="upgrade", revision="r1", defer=False, batch_size=3):
    return revision_op(db, revision, direction, write_strategy=strategy, batch_size=batch_size,
                       defer=defer)


def stored(db, name: str) -> list[bytes]:
    return [bytes(d.raw) for d in
            db.get_collection(name, codec_options=RAW).find().sort("_id", 1)]


def server_result(db, docs: list[dict], *updates: dict) -> list[bytes]:
    """The documents as the server stores them after ``updates``, one after the other."""
    db.drop_collection("reference")
    db.reference.insert_many(docs)
    for update in updates:
        db.reference.update_many({}, update)
    out = stored(db, "reference")
    db.drop_collection("reference")
    return out


ITEMS = [
    {"_id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b"}], "n": 1},
    {"_id": 2, "items": [{"sku": "a"}, {"sku": "c", "qty": 2}], "n": 2},
    {"_id": 3, "items": [{"sku": "b"}], "n": 3},
    {"_id": 4, "items": [], "n": 4},
    {"_id": 5, "n": 5},
    {"_id": 6, "items": [{"sku": "a", "qty": 3}], "n": 6},
    {"_id": 7, "items": [{"sku": "a"}], "n": 7},
]


@NEW_FIELD_ORDER
@pytest.mark.parametrize("update", [
    {"$set": {"9": 1, "!": 1, "01": 1}},
    {"$set": {"²": 1}},
    {"$set": {"²": 1, "2": 1, "b": 1}},
])
def test_new_top_level_fields_are_stored_as_the_server_stores_them(mongo_db, strategy, update):
    docs = [{"_id": i, "a": i} for i in range(5)]
    mongo_db.c.insert_many(docs)
    before = snapshot(mongo_db)
    with op_for(mongo_db, strategy) as op:
        assert op.update_many("c", {}, update) == 5
    assert stored(mongo_db, "c") == server_result(mongo_db, docs, update)
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


@NEW_FIELD_ORDER
def test_change_each_appends_new_fields_in_the_servers_order(mongo_db, strategy):
    docs = [{"_id": i, "a": i} for i in range(4)]
    mongo_db.c.insert_many(docs)

    def add(doc):
        doc.update({"9": 1, "!": 1, "01": 1, "²": 1})

    with op_for(mongo_db, strategy) as op:
        assert op.change_each("c", add) == 4
    assert stored(mongo_db, "c") == server_result(
        mongo_db, docs, {"$set": {"9": 1, "!": 1, "01": 1, "²": 1}})
    assert list(mongo_db.c.find_one({"_id": 0})) == ["_id", "a", "!", "01", "9", "²"]


PATHS = [{"_id": 1, "a": [1, 2]}, {"_id": 2, "a": {"1": 0}}, {"_id": 3}, {"_id": 4, "a": [0]}]


@pytest.mark.parametrize("docs, update", [
    # {sku: "a"} against elements with other fields too: the evaluator cannot tell what the
    # server removes (MongoDB matches it as a query, FerretDB 1.24 exactly)
    (ITEMS, {"$pull": {"items": {"sku": "a"}}}),
    # "a.1" and "a.01" name one element of an array, two fields of a document
    (PATHS, {"$set": {"a.1": 8, "a.01": 7}}),
    (PATHS, {"$set": {"a.01": 7}}),
])
def test_value_dependent_updates_go_to_the_server(mongo_db, mongo_server, strategy, docs,
                                                  update):
    if mongo_server == "javaserver" and len(update.get("$set", {})) > 1:
        pytest.skip("mongo-java-server adds new fields in the update's order (MongoDB 4.x)")
    mongo_db.c.insert_many(docs)
    before, original = snapshot(mongo_db), stored(mongo_db, "c")
    expected = server_result(mongo_db, docs, update)
    with op_for(mongo_db, strategy) as op:
        n = op.update_many("c", {}, update)
    assert stored(mongo_db, "c") == expected
    assert n == sum(a != b for a, b in zip(expected, original, strict=True))
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_deferred_steps_go_on_from_what_the_server_stored(mongo_db):
    # three deferred changes in one rewrite pass: the middle one needs the server for some
    # documents, the last one reads what the server made of them
    first = {"$inc": {"n": 10}}
    middle = {"$pull": {"items": {"sku": "a"}}}
    last = {"$push": {"items": {"sku": "z"}}}
    mongo_db.c.insert_many(ITEMS)
    before = snapshot(mongo_db)
    expected = server_result(mongo_db, ITEMS, first, middle, last)
    with op_for(mongo_db, "rewrite", defer=True) as op:
        op.update_many("c", {}, first)
        op.update_many("c", {}, middle)
        op.change_each("c", lambda d: d.setdefault("items", []).append({"sku": "z"}))
    assert stored(mongo_db, "c") == expected
    with op_for(mongo_db, "rewrite", "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_a_group_pass_writes_a_waiting_server_update_first(mongo_db):
    update = {"$pull": {"items": {"sku": "a"}}}
    mongo_db.c.insert_many(ITEMS)
    mongo_db.owners.insert_many([{"_id": i, "item": i} for i in range(1, 8)])
    expected = server_result(mongo_db, ITEMS, update)

    def count(key, owners, items):
        for owner in owners:
            owner["items"] = sum(len(i.get("items", [])) for i in items)

    with op_for(mongo_db, "rewrite", defer=True) as op:
        op.update_many("c", {}, update)
        op.change_groups(count, owners=op.source("owners", key="item"),
                         items=op.source("c", key="_id"))
    assert stored(mongo_db, "c") == expected
    want = {d["_id"]: len(d.get("items", [])) for d in mongo_db.c.find()}
    assert {d["_id"]: d["items"] for d in mongo_db.owners.find()} == want


class _Updates(monitoring.CommandListener):
    def __init__(self) -> None:
        self.on: list[str] = []

    def started(self, event) -> None:
        if event.command_name == "update":
            self.on.append(event.command["update"])

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_copy_side_updates_are_one_command_per_batch(mongo_server_url, mongo_db):
    from pymongo import MongoClient

    docs = [{"_id": ObjectId(), "items": [{"sku": "a", "qty": i}]} for i in range(40)]
    mongo_db.c.insert_many(docs)
    listener = _Updates()
    client = MongoClient(mongo_server_url, event_listeners=[listener], tz_aware=False)
    try:
        db = client[mongo_db.name]
        with op_for(db, "rewrite", batch_size=10) as op:
            op.update_many("c", {}, {"$pull": {"items": {"sku": "a"}}})
    finally:
        client.close()
    on_copy = [c for c in listener.on if c.startswith("mongrate_tmp_")]
    assert len(on_copy) == 4  # 40 documents, batches of 10
    assert stored(mongo_db, "c") == server_result(mongo_db, docs, {"$pull": {"items": {"sku": "a"}}})
