"""The data helpers on the real server, under both write strategies: what they write, and
that ``restore_undo`` puts back every byte (field order and out-of-range dates included).

FerretDB scans the table for each single-document write, so ``in_place`` is slow there but
correct: the collections here are small, and both strategies run the same cases."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import Int64, ObjectId, Regex
from bson.datetime_ms import DatetimeMS

from mongrate.config import Config
from mongrate.errors import OpError
from mongrate.mongo.codec import RAW
from mongrate.testing.kit import revision_op, snapshot
from tests.engine.conftest import uuid_binary

CFG = Config()
FAR_FUTURE = DatetimeMS(2**62)  # a valid BSON date in year 146140482


@pytest.fixture(params=["rewrite", "in_place"])
def strategy(request) -> str:
    return request.param


def op_for(db, strategy, direction="upgrade", revision="r1", **kw):
    return revision_op(db, revision, direction, write_strategy=strategy, batch_size=3,
                       defer=False, **kw)


@pytest.fixture
def messages(mongo_db, mongo_server):
    # mongo-java-server reads subtype 4 as a UUID and drops the connection unless it is 16
    # bytes (README: what each test server lacks); elsewhere the odd length is the point.
    uuid_bytes = bytes(range(16)) if mongo_server == "javaserver" else b"\x00\x01"
    docs = [
        {"_id": ObjectId(), "n": 0, "file_ids": ["a"], "has_files": False, "tail": 1},
        {"_id": ObjectId(), "n": 1, "file_ids": None, "tail": 1},
        {"_id": ObjectId(), "n": 2, "tail": 1},  # lacks both fields
        {"_id": ObjectId(), "n": 3, "file_ids": [], "has_files": True, "meta": {"x": 1}},
        {"_id": "string-id", "n": 4, "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 6000)},
        {"_id": 42, "n": 5, "file_ids": ["b", "c"], "when": FAR_FUTURE},
        {"_id": {"sub": 1}, "n": 6, "has_files": "yes", "b": uuid_binary(uuid_bytes),
         "l": Int64(7), "r": Regex("^a", "i"), "z": -0.0},
    ]
    mongo_db.chat_messages.insert_many(docs)
    return docs


def raw_doc(db, _id):
    return bytes(db.get_collection("chat_messages", codec_options=RAW).find_one({"_id": _id}).raw)


def test_update_many_writes_and_restore_is_byte_exact(mongo_db, messages, strategy):
    before = snapshot(mongo_db)
    with op_for(mongo_db, strategy) as op:
        n = op.update_many("chat_messages", {"file_ids": {"$not": {"$type": "array"}}},
                           {"$set": {"file_ids": [], "has_files": False}})
        assert n == 4  # n=1 null; n=2, n=4, n=6 absent
        op.update_many("chat_messages", {}, {"$set": {"checked": True}, "$unset": {"meta": ""}})
    assert mongo_db.chat_messages.count_documents({"file_ids": {"$type": "array"}}) == 7
    assert mongo_db.chat_messages.count_documents({"meta": {"$exists": True}}) == 0
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_undo_")] == []


def test_unset_field_comes_back_in_its_place(mongo_db, messages, strategy, mongo_server):
    if strategy == "in_place" and mongo_server in ("javaserver", "ferretdb"):
        pytest.skip(f"{mongo_server}: in place, a field goes back in the middle only by a "
                    "replacement conditional on the whole document ($expr, MongoDB); without "
                    "$expr it goes back by $set (last), so that a field the application added "
                    "meanwhile is not replaced away")
    before = raw_doc(mongo_db, messages[0]["_id"])
    with op_for(mongo_db, strategy) as op:
        op.update_many("chat_messages", {"n": 0}, {"$unset": {"file_ids": ""}})
    assert list(mongo_db.chat_messages.find_one({"n": 0})) == ["_id", "n", "has_files", "tail"]
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert raw_doc(mongo_db, messages[0]["_id"]) == before


def test_change_each_on_exotic_values_round_trips(mongo_db, messages, strategy):
    before = snapshot(mongo_db)

    def fix(doc):
        ids = doc.get("file_ids") if isinstance(doc.get("file_ids"), list) else []
        doc["file_ids"] = ids
        doc["has_files"] = bool(ids)
        doc.pop("tail", None)

    with op_for(mongo_db, strategy) as op:
        assert op.change_each("chat_messages", fix) == 7
    moved = mongo_db.get_collection("chat_messages", codec_options=RAW).find_one({"_id": 42})
    assert moved["when"] == FAR_FUTURE  # untouched bytes of a date Python cannot hold
    assert mongo_db.chat_messages.count_documents({"tail": {"$exists": True}}) == 0
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_change_each_with_a_filter_touches_only_matches(mongo_db, messages, strategy):
    with op_for(mongo_db, strategy) as op:
        assert op.change_each("chat_messages", lambda d: d.update(seen=True),
                              filter={"n": {"$gte": 4}}) == 3
    assert sorted(d["n"] for d in mongo_db.chat_messages.find({"seen": True})) == [4, 5, 6]


def test_new_fields_are_appended_as_set_appends_them(mongo_db, messages, strategy,
                                                    mongo_server):
    if strategy == "in_place" and mongo_server == "javaserver":
        pytest.skip("javaserver: $set adds new fields in the order the update names them "
                    "(MongoDB 4.x), not by name as MongoDB 5+ does")
    def add(doc):
        doc["zeta"] = 1
        doc["alpha"] = 2  # MongoDB 5+ appends new fields of one $set by name

    with op_for(mongo_db, strategy) as op:
        op.change_each("chat_messages", add, filter={"n": 2})
    assert list(mongo_db.chat_messages.find_one({"n": 2})) == ["_id", "n", "tail", "alpha", "zeta"]


def test_a_rerun_keeps_the_first_prior_values(mongo_db, messages, strategy):
    before = snapshot(mongo_db)
    for _ in range(2):  # the second run records nothing new: the first record stands
        with op_for(mongo_db, strategy) as op:
            op.update_many("chat_messages", {}, {"$inc": {"n": 10}})
        mongo_db[CFG.undo_collection].delete_many({"kind": "pass"})  # as if a new revision
    assert mongo_db.chat_messages.find_one({"_id": 42})["n"] == 25
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_restore_leaves_fields_written_by_others(mongo_db, messages, strategy):
    with op_for(mongo_db, strategy) as op:
        op.update_many("chat_messages", {}, {"$set": {"has_files": True}})
    mongo_db.chat_messages.update_many({}, {"$set": {"other": "kept"}})
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert mongo_db.chat_messages.count_documents({"other": "kept"}) == 7
    assert mongo_db.chat_messages.find_one({"n": 2}).get("has_files", "absent") == "absent"


def test_undo_is_scoped_by_revision(mongo_db, messages, strategy):
    with op_for(mongo_db, strategy, revision="r1") as op:
        op.update_many("chat_messages", {}, {"$set": {"a": 1}})
    with op_for(mongo_db, strategy, revision="r2") as op:
        op.update_many("chat_messages", {}, {"$set": {"b": 1}})
    with op_for(mongo_db, strategy, "downgrade", revision="r2") as down:
        down.restore_undo()
    assert mongo_db.chat_messages.count_documents({"a": 1}) == 7
    assert mongo_db.chat_messages.count_documents({"b": 1}) == 0


def test_change_groups_reads_two_collections_by_key_and_writes_both(mongo_db, strategy):
    mongo_db.sessions.insert_many([{"_id": i, "user": f"u{i % 3}", "count": None}
                                   for i in range(9)])
    mongo_db.events.insert_many([{"_id": 100 + i, "user": f"u{i % 4}", "t": i}
                                 for i in range(12)])
    before = snapshot(mongo_db)
    seen = []

    def tally(user, sessions, events):
        seen.append((user, len(sessions), [e["t"] for e in events]))
        for s in sessions:
            s["count"] = len(events)
        for e in events:
            e["mark"] = user

    with op_for(mongo_db, strategy) as op:
        counts = op.change_groups(tally, sessions=op.source("sessions", key="user"),
                                  events=op.source("events", key="user", order="t"))
    assert counts == {"sessions": 9, "events": 12}
    assert seen == [("u0", 3, [0, 4, 8]), ("u1", 3, [1, 5, 9]), ("u2", 3, [2, 6, 10]),
                    ("u3", 0, [3, 7, 11])]
    assert mongo_db.sessions.find_one({"_id": 0})["count"] == 3
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_change_groups_read_only_sources_with_convert_and_map(mongo_db, strategy):
    ids = [ObjectId() for _ in range(5)]
    mongo_db.uploads.insert_many([{"_id": i, "file_id": str(oid)} for i, oid in enumerate(ids)])
    mongo_db["fs.files"].insert_many([{"_id": oid, "length": 10 * i} for i, oid in enumerate(ids)])
    mongo_db["fs.chunks"].insert_many([{"files_id": oid, "n": 0, "data": b"%d" % i}
                                       for i, oid in enumerate(ids)])

    def facts(file_id, uploads, files, heads):
        for u in uploads:
            u["length"] = files[0]["length"]
            u["head"] = heads[0]["head"]

    with op_for(mongo_db, strategy) as op:
        op.change_groups(
            facts,
            uploads=op.source("uploads", key="file_id"),
            files=op.source("fs.files", key="_id", convert=str, projection={"length": 1}),
            heads=op.source("fs.chunks", key="files_id", convert=str, filter={"n": 0},
                            map=lambda c: {"head": bytes(c["data"]).decode()}))
    assert [(d["length"], d["head"]) for d in mongo_db.uploads.find().sort("_id", 1)] == [
        (0, "0"), (10, "1"), (20, "2"), (30, "3"), (40, "4")]


def test_a_change_may_not_touch_id(mongo_db, messages, strategy):
    with pytest.raises(OpError, match="_id"), op_for(mongo_db, strategy) as op:
        op.change_each("chat_messages", lambda d: d.update(_id="new"))
    with pytest.raises(OpError, match="_id"), op_for(mongo_db, strategy) as op:
        op.update_many("chat_messages", {}, {"$set": {"_id": 1}})


def test_bad_updates_are_refused_before_anything_is_written(mongo_db, messages, strategy):
    before = snapshot(mongo_db)
    with pytest.raises(OpError, match="update"), op_for(mongo_db, strategy) as op:
        op.update_many("chat_messages", {}, {"n": 1})  # a replacement, not operators
    with pytest.raises(OpError, match="change_each"), op_for(mongo_db, strategy) as op:
        op.update_many("chat_messages", {}, [{"$set": {"n": 1}}])  # a pipeline
    assert snapshot(mongo_db) == before


def test_dry_run_reads_counts_and_writes_nothing(mongo_db, messages, strategy):
    before = snapshot(mongo_db)
    with op_for(mongo_db, strategy, dry_run=True) as op:
        assert op.change_each("chat_messages", lambda d: d.update(x=1)) == 7
        assert op.update_many("chat_messages", {"n": {"$lt": 2}}, {"$set": {"y": 1}}) == 2
        writes = op._engine.db.writes
    assert snapshot(mongo_db) == before
    assert [w["method"] for w in writes] == ["change_each", "update_many"]
    assert "changes 7 of 7" in writes[0]["args"]
    assert mongo_db.list_collection_names() == ["chat_messages"]


def test_interrupted_in_place_pass_is_rolled_back_before_it_runs_again(mongo_db, messages):
    """$inc is not idempotent: a resumed pass must not apply it twice to what the
    interrupted one already wrote."""
    before = snapshot(mongo_db)
    with op_for(mongo_db, "in_place") as op:
        op.update_many("chat_messages", {}, {"$inc": {"n": 100}})
    # as if the run had been killed after its writes, before it marked the pass done
    mongo_db[CFG.undo_collection].update_one({"kind": "pass"}, {"$set": {"state": "running"}})
    with op_for(mongo_db, "in_place") as op:
        op.update_many("chat_messages", {}, {"$inc": {"n": 100}})
    assert sorted(d["n"] for d in mongo_db.chat_messages.find()) == list(range(100, 107))
    with op_for(mongo_db, "in_place", "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_a_pass_failing_half_way_is_undone_exactly(mongo_db, messages, strategy):
    before = snapshot(mongo_db)

    def flaky(doc):
        if doc["n"] == 5:
            raise RuntimeError("boom")
        doc["n"] += 100

    with pytest.raises(RuntimeError), op_for(mongo_db, strategy) as op:
        op.change_each("chat_messages", flaky)
    with op_for(mongo_db, strategy, "downgrade") as down:
        down.restore_undo()
    assert snapshot(mongo_db) == before


def test_interrupted_rewrite_never_touched_the_live_collection(mongo_db, messages):
    before = snapshot(mongo_db)

    def boom(doc):
        if doc["n"] == 5:
            raise RuntimeError("boom")
        doc["n"] = -1

    with pytest.raises(RuntimeError), op_for(mongo_db, "rewrite") as op:
        op.change_each("chat_messages", boom)
    assert snapshot(mongo_db) == before  # the temp copy is not part of a snapshot
    with op_for(mongo_db, "rewrite", "downgrade") as down:
        down.restore_undo()  # its records describe nothing that happened: skipped
    assert snapshot(mongo_db) == before
    assert [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp")] == []


def test_statement_limit_keeps_ferretdb_update_commands_small(mongo_db):
    """FerretDB 1.24 deadlocks on an update command of ~100 statements."""
    from mongrate.mongo.collections import statement_limit

    if "ferretdbVersion" in mongo_db.client.admin.command("buildInfo"):
        assert statement_limit(mongo_db) < 100
    mongo_db.items.insert_many([{"_id": i} for i in range(300)])
    with revision_op(mongo_db, "r1", write_strategy="in_place", batch_size=300,
                     defer=False) as op:
        assert op.change_each("items", lambda d: d.update(v=1)) == 300


def test_raw_records_keep_values_python_cannot_decode(mongo_db):
    """A date past year 9999 in a field the change rewrites comes back byte for byte."""
    mongo_db.things.insert_one({"_id": 1, "when": FAR_FUTURE, "k": "v"})
    original = bytes(mongo_db.get_collection("things", codec_options=RAW).find_one().raw)
    with revision_op(mongo_db, "r1", write_strategy="rewrite") as op:
        op.update_many("things", {}, {"$set": {"when": dt.datetime(2020, 1, 1)}})
    with revision_op(mongo_db, "r1", "downgrade", write_strategy="rewrite") as op:
        op.restore_undo()
    assert bytes(mongo_db.get_collection("things", codec_options=RAW).find_one().raw) == original
