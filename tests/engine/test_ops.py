"""op helpers on the real server: exact undo, idempotent re-runs, indexes, snapshots."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import ObjectId
from deepdiff import DeepDiff

from mongrate.config import Config
from mongrate.errors import OpError
from mongrate.mongo.collections import collection_checksum
from mongrate.operations.ops import Operations, touched_fields
from mongrate.progress import Reporter

CFG = Config()


def make_op(db, revision="r1", direction="upgrade", batch_size=3):
    return Operations(db, undo=db[CFG.undo_collection], backups=db[CFG.backups_collection],
                      revision=revision, direction=direction, batch_size=batch_size,
                      reporter=Reporter(quiet=True))


def snapshot(db, *names):
    return {n: sorted(db[n].find(), key=lambda d: str(d["_id"])) for n in names}


@pytest.fixture
def messages(mongo_db):
    docs = [
        {"_id": ObjectId(), "n": 0, "file_ids": ["a"], "has_files": False},
        {"_id": ObjectId(), "n": 1, "file_ids": None},
        {"_id": ObjectId(), "n": 2},  # lacks both fields
        {"_id": ObjectId(), "n": 3, "file_ids": [], "has_files": True, "meta": {"x": 1}},
        {"_id": "string-id", "n": 4, "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 6000)},
        {"_id": 42, "n": 5, "file_ids": ["b", "c"]},
        {"_id": ObjectId(), "n": 6, "has_files": "yes"},
    ]
    mongo_db.chat_messages.insert_many(docs)
    return docs


def test_update_many_then_restore_is_exact(mongo_db, messages):
    before = snapshot(mongo_db, "chat_messages")
    op = make_op(mongo_db)
    modified = op.update_many("chat_messages", {"file_ids": {"$not": {"$type": "array"}}},
                              {"$set": {"file_ids": [], "has_files": False}})
    assert modified == 4  # n=1 null; n=2, n=4, n=6 absent
    assert mongo_db.chat_messages.count_documents({"file_ids": {"$type": "array"}}) == 7
    op.update_many("chat_messages", {}, {"$set": {"checked": True}, "$unset": {"meta": ""}})
    assert mongo_db.chat_messages.count_documents({"meta": {"$exists": True}}) == 0
    down = make_op(mongo_db, direction="downgrade")
    assert down.restore_undo() == 7
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0


def test_rerun_keeps_first_prior_values(mongo_db, messages):
    before = snapshot(mongo_db, "chat_messages")
    op = make_op(mongo_db)
    op.update_many("chat_messages", {}, {"$set": {"has_files": True}})
    # an interrupted run repeated: the same helper again, then a different value
    make_op(mongo_db).update_many("chat_messages", {}, {"$set": {"has_files": False}})
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}


def test_restore_leaves_fields_written_by_others(mongo_db, messages):
    op = make_op(mongo_db)
    op.update_many("chat_messages", {"n": {"$lt": 3}}, {"$set": {"has_files": True}})
    mongo_db.chat_messages.update_many({}, {"$set": {"edited_by_app": 1}})
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert mongo_db.chat_messages.count_documents({"edited_by_app": 1}) == 7
    assert mongo_db.chat_messages.count_documents({"n": 2, "has_files": {"$exists": False}}) == 1


def test_update_each_batches_and_restores(mongo_db, messages):
    before = snapshot(mongo_db, "chat_messages")
    op = make_op(mongo_db, batch_size=2)
    pairs = [(d["_id"], {"$set": {"rank": d["n"] * 10}, "$unset": {"file_ids": ""}}) for d in messages]
    assert op.update_each("chat_messages", iter(pairs)) == 7
    assert sorted(d["rank"] for d in mongo_db.chat_messages.find()) == [0, 10, 20, 30, 40, 50, 60]
    make_op(mongo_db, direction="downgrade").restore_undo("chat_messages")
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}


def test_undo_is_scoped_by_revision(mongo_db, messages):
    make_op(mongo_db, "r1").update_many("chat_messages", {}, {"$set": {"a": 1}})
    make_op(mongo_db, "r2").update_many("chat_messages", {}, {"$set": {"b": 2}})
    make_op(mongo_db, "r2", "downgrade").restore_undo()
    assert mongo_db.chat_messages.count_documents({"a": 1}) == 7
    assert mongo_db.chat_messages.count_documents({"b": {"$exists": True}}) == 0


def test_touched_fields_rejects_replacements_and_id():
    assert touched_fields({"$set": {"a.b": 1, "c": 2}, "$rename": {"d": "e"}}) == {"a", "c", "d", "e"}
    with pytest.raises(OpError, match="operators"):
        touched_fields({"a": 1})
    with pytest.raises(OpError, match="_id"):
        touched_fields({"$set": {"_id": 1}})


def test_create_index_remembers_who_created_it(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="pre_n")
    op = make_op(mongo_db)
    assert op.create_index("chat_messages", [("n", 1)], name="pre_n") is False
    assert op.create_index("chat_messages", [("file_ids", 1), ("n", -1)], name="files_n") is True
    assert make_op(mongo_db).create_index("chat_messages", [("file_ids", 1), ("n", -1)],
                                          name="files_n") is False  # re-run
    down = make_op(mongo_db, direction="downgrade")
    assert down.drop_index("chat_messages", "files_n") is True
    assert down.drop_index("chat_messages", "pre_n") is False
    names = set(mongo_db.chat_messages.index_information())
    assert "pre_n" in names and "files_n" not in names


def test_dropped_index_comes_back_on_restore(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", -1)], name="old_n")
    make_op(mongo_db).drop_index("chat_messages", "old_n")
    assert "old_n" not in mongo_db.chat_messages.index_information()
    make_op(mongo_db, direction="downgrade").restore_undo()
    info = mongo_db.chat_messages.index_information()["old_n"]
    assert [tuple(k) for k in info["key"]] == [("n", -1)]


def test_backup_snapshot_verifies_and_is_dropped_on_restore(mongo_db, messages):
    op = make_op(mongo_db)
    now = dt.datetime(2026, 11, 24, 12, 0, 0)
    manifest = op.backup_collection("chat_messages", now=now)
    assert manifest["target"] == "chat_messages_backup_20261124_120000"
    assert manifest["count"] == 7
    assert collection_checksum(mongo_db, manifest["target"]) == (7, manifest["checksum"])
    assert collection_checksum(mongo_db, "chat_messages") == (7, manifest["checksum"])
    again = make_op(mongo_db).backup_collection("chat_messages")
    assert again["target"] == manifest["target"]  # a re-run keeps the verified snapshot
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert manifest["target"] not in mongo_db.list_collection_names()
    assert mongo_db[CFG.backups_collection].find_one()["status"] == "dropped"


def test_interrupted_backup_starts_over(mongo_db, messages):
    op = make_op(mongo_db)
    manifest = op.backup_collection("chat_messages")
    # simulate a run killed half way: status back to copying, a partial copy
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "copying"}})
    mongo_db[manifest["target"]].delete_many({"n": {"$gt": 2}})
    mongo_db[manifest["target"]].insert_one({"_id": "junk"})
    redone = make_op(mongo_db).backup_collection("chat_messages")
    assert redone["target"] == manifest["target"]
    assert collection_checksum(mongo_db, redone["target"]) == collection_checksum(mongo_db, "chat_messages")


def test_checksum_sees_a_changed_value(mongo_db, messages):
    before = collection_checksum(mongo_db, "chat_messages")
    mongo_db.chat_messages.update_one({"n": 3}, {"$set": {"meta.x": 2}})
    assert collection_checksum(mongo_db, "chat_messages") != before


def test_subdocument_and_mixed_ids_restore_exactly(mongo_db):
    docs = [{"_id": {"a": 1, "b": 2}, "v": 1}, {"_id": "1", "v": 2}, {"_id": 1, "v": 3},
            {"_id": 1.5, "v": 4}, {"_id": True, "v": 5}, {"_id": None, "v": 6}]
    mongo_db.odd.insert_many(docs)
    before = snapshot(mongo_db, "odd")
    op = make_op(mongo_db, batch_size=2)
    assert op.update_many("odd", {}, {"$set": {"v": 0, "w": 1}}) == 6
    op.update_each("odd", [(d["_id"], {"$inc": {"v": 10}}) for d in docs])
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert DeepDiff(before, snapshot(mongo_db, "odd")) == {}


def test_a_document_named_like_an_index_record_does_not_collide(mongo_db):
    from mongrate.runtime.store import Store

    Store(mongo_db, CFG).ensure_indexes()
    mongo_db.items.insert_one({"_id": "index:i7", "v": 1})
    op = make_op(mongo_db)
    op.create_index("items", [("v", 1)], name="i7")
    op.update_many("items", {}, {"$set": {"v": 2}})
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert mongo_db.items.find_one({"_id": "index:i7"})["v"] == 1
    assert "i7" not in mongo_db.items.index_information()


def test_create_index_refuses_conflicting_options_or_keys(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="plain_n")
    with pytest.raises(OpError, match="options"):
        make_op(mongo_db).create_index("chat_messages", [("n", 1)], name="uniq_n", unique=True)
    with pytest.raises(OpError, match="other keys"):
        make_op(mongo_db).create_index("chat_messages", [("has_files", 1)], name="plain_n")


def test_backup_never_overwrites_an_existing_target(mongo_db, messages):
    from mongrate.errors import BackupError

    mongo_db.important.insert_many([{"k": i} for i in range(5)])
    with pytest.raises(BackupError, match="already exists"):
        make_op(mongo_db).backup_collection("chat_messages", target="important")
    assert mongo_db.important.count_documents({}) == 5


def test_upgrade_downgrade_upgrade_with_a_named_backup(mongo_db, messages):
    make_op(mongo_db).backup_collection("chat_messages", target="msgs_snap")
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert "msgs_snap" not in mongo_db.list_collection_names()
    again = make_op(mongo_db).backup_collection("chat_messages", target="msgs_snap")
    assert again["status"] == "complete" and mongo_db.msgs_snap.count_documents({}) == 7


def test_dry_run_records_writes_from_every_path(mongo_db, messages):
    from mongrate.mongo.dryrun import RecordingDatabase

    rec = RecordingDatabase(mongo_db)
    before = snapshot(mongo_db, "chat_messages")
    rec["chat_messages"].database["other"].insert_one({"x": 1})
    rec.client[mongo_db.name]["other"].insert_one({"x": 2})
    rec.create_collection("fresh").insert_one({"x": 3})
    rec["chat_messages"].with_options().update_many({}, {"$set": {"x": 4}})
    rec["chat_messages"].aggregate([{"$match": {}}, {"$out": "copied"}])
    assert rec["chat_messages"].count_documents({}) == 7  # reads still reach the server
    assert rec.command("ping")["ok"] == 1.0
    assert set(mongo_db.list_collection_names()) == {"chat_messages"}
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}
    assert [w["method"] for w in rec.writes] == [
        "insert_one", "insert_one", "create_collection", "insert_one", "update_many", "aggregate"]


def test_large_batches_are_split_below_the_servers_statement_limit(mongo_db):
    """FerretDB 1.24 deadlocks on an update command of ~100 statements; batches of 300
    documents must still go through (as commands of at most statement_limit)."""
    from mongrate.mongo.collections import statement_limit

    limit = statement_limit(mongo_db)
    if "ferretdbVersion" in mongo_db.client.admin.command("buildInfo"):
        assert limit < 100
    mongo_db.big.insert_many([{"_id": i, "v": i} for i in range(300)])
    op = Operations(mongo_db, undo=mongo_db[CFG.undo_collection],
                    backups=mongo_db[CFG.backups_collection], revision="r1",
                    direction="upgrade", batch_size=300, reporter=Reporter(quiet=True),
                    statement_limit=limit)
    assert op.update_each("big", ((i, {"$set": {"v": -i}}) for i in range(300))) == 299
    down = Operations(mongo_db, undo=mongo_db[CFG.undo_collection],
                      backups=mongo_db[CFG.backups_collection], revision="r1",
                      direction="downgrade", batch_size=300, reporter=Reporter(quiet=True),
                      statement_limit=limit)
    assert down.restore_undo() == 300
    assert sorted(d["v"] for d in mongo_db.big.find()) == list(range(300))


# ---------------------------------------------------------------- swap backups
def index_specs(db, name):
    return sorted((n, tuple(map(tuple, i["key"])), bool(i.get("unique")))
                  for n, i in db[name].index_information().items())


def test_swap_backup_keeps_the_original_and_swaps_in_an_exact_copy(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="n_unique", unique=True)
    before = snapshot(mongo_db, "chat_messages")
    indexes = index_specs(mongo_db, "chat_messages")
    manifest = make_op(mongo_db).backup_collection("chat_messages", method="swap",
                                                   now=dt.datetime(2026, 11, 24, 12, 0, 0))
    target = manifest["target"]
    assert manifest["status"] == "complete" and manifest["method"] == "swap"
    assert manifest["count"] == 7
    for name in ("chat_messages", target):
        assert DeepDiff(before["chat_messages"], snapshot(mongo_db, name)[name]) == {}
        assert collection_checksum(mongo_db, name) == (7, manifest["checksum"])
        assert index_specs(mongo_db, name) == indexes  # the live copy got the indexes too
    assert manifest["tmp"] not in mongo_db.list_collection_names()
    assert make_op(mongo_db).backup_collection("chat_messages", method="swap")["_id"] == manifest["_id"]
    make_op(mongo_db, direction="downgrade").restore_undo()
    assert target not in mongo_db.list_collection_names()
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}


@pytest.mark.parametrize("renamed", [False, True])
def test_swap_interrupted_after_the_copy_is_finished_by_a_rerun(mongo_db, messages, renamed):
    before = snapshot(mongo_db, "chat_messages")
    manifest = make_op(mongo_db).backup_collection("chat_messages", method="swap")
    target, tmp = manifest["target"], manifest["tmp"]
    # back to the moment the copy was built, before (or between) the two renames
    mongo_db.chat_messages.rename(tmp)
    if not renamed:
        mongo_db[target].rename("chat_messages")
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "built"}})
    done = make_op(mongo_db).backup_collection("chat_messages", method="swap")
    assert done["status"] == "complete"
    names = set(mongo_db.list_collection_names())
    assert {"chat_messages", target} <= names and tmp not in names
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}
    assert DeepDiff(before["chat_messages"], snapshot(mongo_db, target)[target]) == {}


def test_swap_that_cannot_finish_says_where_the_documents_are(mongo_db, messages):
    from mongrate.errors import BackupError

    manifest = make_op(mongo_db).backup_collection("chat_messages", method="swap")
    mongo_db.chat_messages.rename(manifest["tmp"])
    mongo_db.chat_messages.insert_one({"written": "by the service"})  # recreates the live one
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "built"}})
    with pytest.raises(BackupError, match=f"original documents are in {manifest['target']}"):
        make_op(mongo_db).backup_collection("chat_messages", method="swap")
    assert mongo_db[manifest["target"]].count_documents({}) == 7
    assert mongo_db[manifest["tmp"]].count_documents({}) == 7


def assert_stopped_swap_left_live_alone(mongo_db, guard, error, before) -> None:
    """A swap backup whose run stops (``guard`` raises ``error``) before the swap."""
    op = make_op(mongo_db, batch_size=2)
    op._guard = guard
    with pytest.raises(error):
        op.backup_collection("chat_messages", method="swap")
    op.close()
    manifest = mongo_db[CFG.backups_collection].find_one()
    assert manifest["status"] == "copying"  # never marked built, never renamed
    assert manifest["target"] not in mongo_db.list_collection_names()
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}


def test_swap_interrupted_during_the_copy_starts_over_and_never_touched_live(mongo_db, messages):
    before = snapshot(mongo_db, "chat_messages")
    calls = []

    def die_after_two_batches():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for the process being killed

    assert_stopped_swap_left_live_alone(mongo_db, die_after_two_batches, KeyboardInterrupt,
                                        before)
    done = make_op(mongo_db).backup_collection("chat_messages", method="swap")
    assert done["count"] == 7
    assert DeepDiff(before, snapshot(mongo_db, "chat_messages")) == {}


def test_swap_never_renames_after_the_lock_is_lost(mongo_db, messages):
    from mongrate.errors import LockLostError

    before = snapshot(mongo_db, "chat_messages")

    def lease_expires_once_the_copy_is_built():
        names = mongo_db.list_collection_names()
        tmp = [n for n in names if n.startswith("mongrate_tmp_")]
        if tmp and mongo_db[tmp[0]].count_documents({}) == 7:
            raise LockLostError("lost the lock")

    assert_stopped_swap_left_live_alone(mongo_db, lease_expires_once_the_copy_is_built,
                                        LockLostError, before)


def test_swap_sees_a_writer_and_swaps_nothing(mongo_db, messages):
    from mongrate.errors import BackupError

    before = snapshot(mongo_db, "chat_messages")

    def a_writer_is_running():
        mongo_db.chat_messages.insert_one({"late": True})

    op = make_op(mongo_db, batch_size=2)
    op._guard = a_writer_is_running
    with pytest.raises(BackupError, match="changed while it was being backed up"):
        op.backup_collection("chat_messages", method="swap")
    manifest = mongo_db[CFG.backups_collection].find_one()
    names = set(mongo_db.list_collection_names())
    assert manifest["target"] not in names and manifest["tmp"] not in names
    live = snapshot(mongo_db, "chat_messages")["chat_messages"]
    assert [d for d in live if not d.get("late")] == before["chat_messages"]


def test_swap_of_a_collection_with_options_falls_back_to_a_copy(mongo_db):
    mongo_db.create_collection("checked", capped=True, size=1 << 20)  # FerretDB: no validators
    mongo_db.checked.insert_many([{"n": i} for i in range(5)])
    manifest = make_op(mongo_db).backup_collection("checked", method="swap")
    assert manifest["method"] == "copy" and manifest["count"] == 5
    options = next(mongo_db.list_collections(filter={"name": "checked"}))["options"]
    assert options.get("capped")  # the live collection is the original one


def test_backup_method_must_be_known(mongo_db, messages):
    with pytest.raises(OpError, match="'move'"):
        make_op(mongo_db).backup_collection("chat_messages", method="move")
    assert mongo_db[CFG.backups_collection].count_documents({}) == 0
