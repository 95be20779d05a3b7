"""Collection rewrites (mongrate/rewrite.py, op.rewrite): exact undo, resumable phases, server order."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import ObjectId
from bson.int64 import Int64
from deepdiff import DeepDiff

from mongrate.mongo.codec import RAW
from mongrate.operations.rewrite import (
    CollectionRewrite,
    RewriteError,
    bson_order_key,
    restore,
    side_name,
    tmp_name,
)
from tests.versions.conftest import make_op

REV = "feedc0ffee00"
ODD_IDS = [7, 2.5, Int64(9), "s-1", "Ünï", ObjectId(), ObjectId(), {"k": 1},
           dt.datetime(2025, 1, 2, 3, 4, 5, 6000), True]


@pytest.fixture
def items(mongo_db):
    docs = []
    for n, _id in enumerate(ODD_IDS):
        doc = {"_id": _id, "n": n, "a": {"nested": [1, {"x": None}]}, "z": n * 1.5}
        if n % 3 == 0:
            doc["flag"] = None
        docs.append(doc)
    mongo_db.items.insert_many(docs)
    mongo_db.items.create_index([("n", 1)], name="by_n", unique=True)
    mongo_db.items.create_index([("z", -1), ("n", 1)], name="z_n")
    return docs


def raw_docs(db, name="items"):
    return list(db.get_collection(name, codec_options=RAW).find())


def rewrite(db, change, batch_size=3):
    op = make_op(db, REV, batch_size=batch_size)
    rw = CollectionRewrite(op, "items")
    assert rw.start()
    for raw in raw_docs(db):
        fields = change(raw)
        rw.change(raw, fields) if fields else rw.keep(raw)
    return rw.finish()


def by_id(db, name="items"):
    return sorted(db[name].find(), key=lambda d: repr(d["_id"]))


def test_server_sorts_ids_the_way_the_merge_expects(mongo_db, items):
    served = [d["_id"] for d in mongo_db.items.find({}, {"_id": 1}).sort("_id", 1)]
    assert served == sorted(served, key=bson_order_key)
    assert len(served) == len(ODD_IDS)


def test_rewrite_changes_records_and_restores_exactly(mongo_db, items):
    before = by_id(mongo_db)
    raw_before = {repr(d["_id"]): d.raw for d in raw_docs(mongo_db)}
    changed = rewrite(mongo_db, lambda d: {"n2": d["n"] * 2, "flag": True} if d["n"] % 2 else {})
    assert changed == 5
    assert mongo_db.items.count_documents({"flag": True}) == 5
    assert set(mongo_db.items.index_information()) == {"_id_", "by_n", "z_n"}
    assert mongo_db.items.index_information()["by_n"].get("unique") is True
    assert tmp_name(make_op(mongo_db, REV), "items") not in mongo_db.list_collection_names()
    side = side_name(make_op(mongo_db, REV), "items")
    assert mongo_db[side].count_documents({}) == 5
    # a field that existed keeps its place; a new one goes last
    doc = mongo_db.items.find_one({"n": 3})
    assert list(doc)[-1] == "n2" and list(doc).index("flag") == 4

    assert restore(make_op(mongo_db, REV, "downgrade", batch_size=2), "items") == 5
    assert DeepDiff(before, by_id(mongo_db)) == {}
    # byte-identical, field order included
    assert {repr(d["_id"]): d.raw for d in raw_docs(mongo_db)} == raw_before
    assert side not in mongo_db.list_collection_names()
    assert mongo_db.mongrate_undo.count_documents({"revision": REV}) == 0


def test_restore_leaves_other_fields_and_survives_deleted_documents(mongo_db, items):
    rewrite(mongo_db, lambda d: {"flag": "up"})
    mongo_db.items.update_many({}, {"$set": {"app_wrote": 1}})  # the app after the upgrade
    mongo_db.items.delete_one({"n": 4})
    assert restore(make_op(mongo_db, REV, "downgrade"), "items") == len(ODD_IDS) - 1
    assert mongo_db.items.count_documents({"app_wrote": 1}) == len(ODD_IDS) - 1
    assert mongo_db.items.count_documents({"flag": "up"}) == 0
    # flag was null on n = 0, 3, 6, 9 and absent elsewhere: so it is again
    assert sorted(d["n"] for d in mongo_db.items.find({"flag": {"$exists": True}})) == [0, 3, 6, 9]
    assert mongo_db.items.count_documents({"flag": None}) == len(ODD_IDS) - 1


def test_rerun_keeps_first_recorded_values(mongo_db, items):
    before = by_id(mongo_db)
    # an interrupted build: priors of 4 documents recorded, live collection untouched
    op = make_op(mongo_db, REV)
    rw = CollectionRewrite(op, "items")
    rw.start()
    first = raw_docs(mongo_db)[:4]
    for raw in first:
        rw.change(raw, {"z": -1})
    rw._flush(wait=True)
    assert mongo_db[tmp_name(op, "items")].count_documents({}) == 4
    # the re-run starts the copy over; values recorded before are never overwritten
    mongo_db.items.update_many({}, {"$set": {"z": 99}})
    assert rewrite(mongo_db, lambda d: {"z": -1}) == len(ODD_IDS)
    assert mongo_db[side_name(op, "items")].count_documents({}) == len(ODD_IDS)
    restore(make_op(mongo_db, REV, "downgrade"), "items")
    firsts = {repr(d["_id"]) for d in first}
    for doc in by_id(mongo_db):
        want = next(b["z"] for b in before if b["_id"] == doc["_id"]) \
            if repr(doc["_id"]) in firsts else 99
        assert doc["z"] == want, doc["_id"]


def test_done_rewrite_is_not_repeated(mongo_db, items):
    rewrite(mongo_db, lambda d: {"z": 0})
    again = CollectionRewrite(make_op(mongo_db, REV), "items")
    assert again.start() is False


@pytest.mark.parametrize("dropped_live", [False, True])
def test_interrupted_swap_is_finished_by_the_rerun(mongo_db, items, dropped_live):
    before = by_id(mongo_db)
    op = make_op(mongo_db, REV)
    rw = CollectionRewrite(op, "items")
    rw.start()
    for raw in raw_docs(mongo_db):
        rw.change(raw, {"z": "new"})
    rw._flush(wait=True)
    rw._copy_options_and_indexes()
    mongo_db.mongrate_undo.update_one({"revision": REV, "kind": "rewrite"},
                                      {"$set": {"state": "built"}})
    if dropped_live:  # killed between the drop and the rename
        mongo_db.drop_collection("items")
    again = CollectionRewrite(make_op(mongo_db, REV), "items")
    assert again.start() is False
    assert mongo_db.items.count_documents({"z": "new"}) == len(ODD_IDS)
    assert "by_n" in mongo_db.items.index_information()
    restore(make_op(mongo_db, REV, "downgrade"), "items")
    assert DeepDiff(before, by_id(mongo_db)) == {}


def test_a_rewrite_missing_documents_refuses_to_swap(mongo_db, items):
    op = make_op(mongo_db, REV)
    rw = CollectionRewrite(op, "items")
    rw.start()
    for raw in raw_docs(mongo_db)[1:]:
        rw.change(raw, {"z": "new"})
    with pytest.raises(RewriteError, match="was the service writing"):
        rw.finish()
    assert mongo_db.items.count_documents({"z": "new"}) == 0


def test_dry_run_writes_nothing(mongo_db, items):
    before = by_id(mongo_db)
    op = make_op(mongo_db, REV, dry_run=True)
    rw = CollectionRewrite(op, "items")
    assert rw.start()
    for raw in raw_docs(mongo_db):
        rw.change(raw, {"z": 0})
    assert rw.finish() == len(ODD_IDS)
    assert DeepDiff(before, by_id(mongo_db)) == {}
    assert set(mongo_db.list_collection_names()) == {"items"}
