"""op.backup_collection and the index helpers on the real server."""

from __future__ import annotations

import pytest
from bson import ObjectId

from mongrate.config import Config
from mongrate.errors import BackupError, LockLostError, OpError
from mongrate.mongo.collections import collection_checksum
from mongrate.testing.kit import revision_op, snapshot

DROP_FAILS = pytest.mark.skip_server(
    "javaserver", reason="mongo-java-server fails to drop the collection after its index "
                         "was dropped ('Expected [EmptyIndex[name=k]] to be empty')")


NO_CAPPED = pytest.mark.skip_server(
    "javaserver", reason="mongo-java-server has no capped collections")


CFG = Config()
COPY, SWAP = "in_place", "rewrite"  # the write strategy decides how a backup is made


def op_for(db, strategy=COPY, direction="upgrade", batch_size=3):
    return revision_op(db, "r1", direction, write_strategy=strategy, batch_size=batch_size,
                       defer=False)


def backup(db, strategy, *names, guard=None):
    with op_for(db, strategy, batch_size=2) as op:
        op._engine.guard = guard
        return op.backup_collection(*names)


def restore(db, strategy=COPY):
    with op_for(db, strategy, "downgrade") as op:
        return op.restore_undo()


@pytest.fixture
def messages(mongo_db):
    mongo_db.chat_messages.insert_many([{"_id": ObjectId(), "n": i} for i in range(7)])


def index_specs(db, name):
    return sorted((n, tuple(map(tuple, i["key"])), bool(i.get("unique")))
                  for n, i in db[name].index_information().items())


def test_copy_backup_verifies_is_kept_on_rerun_and_dropped_on_restore(mongo_db, messages):
    (manifest,) = backup(mongo_db, COPY, "chat_messages")
    target = manifest["target"]
    assert target.startswith("chat_messages_backup_") and manifest["method"] == "copy"
    assert manifest["count"] == 7
    assert collection_checksum(mongo_db, target) == (7, manifest["checksum"])
    assert collection_checksum(mongo_db, "chat_messages") == (7, manifest["checksum"])
    (again,) = backup(mongo_db, COPY, "chat_messages")
    assert again["target"] == target  # a re-run keeps the verified snapshot
    restore(mongo_db)
    assert target not in mongo_db.list_collection_names()
    assert mongo_db[CFG.backups_collection].find_one()["status"] == "dropped"


def test_several_backups_share_one_stamp(mongo_db, messages):
    mongo_db.other.insert_many([{"k": i} for i in range(3)])
    manifests = backup(mongo_db, SWAP, "chat_messages", "other")
    assert len({m["backup_id"] for m in manifests}) == 1
    assert [m["count"] for m in manifests] == [7, 3]


def test_interrupted_copy_starts_over(mongo_db, messages):
    (manifest,) = backup(mongo_db, COPY, "chat_messages")
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "copying"}})
    mongo_db[manifest["target"]].delete_many({"n": {"$gt": 2}})
    mongo_db[manifest["target"]].insert_one({"_id": "junk"})
    (redone,) = backup(mongo_db, COPY, "chat_messages")
    assert redone["target"] == manifest["target"]
    assert collection_checksum(mongo_db, redone["target"]) == \
        collection_checksum(mongo_db, "chat_messages")


def test_swap_backup_keeps_the_original_and_swaps_in_an_exact_copy(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="n_unique", unique=True)
    before = snapshot(mongo_db)
    indexes = index_specs(mongo_db, "chat_messages")
    (manifest,) = backup(mongo_db, SWAP, "chat_messages")
    target = manifest["target"]
    assert manifest["status"] == "complete" and manifest["method"] == "swap"
    for name in ("chat_messages", target):
        assert snapshot(mongo_db)[name]["docs"] == before["chat_messages"]["docs"]
        assert index_specs(mongo_db, name) == indexes  # the live copy got the indexes too
    assert manifest["tmp"] not in mongo_db.list_collection_names()
    restore(mongo_db, SWAP)
    assert snapshot(mongo_db) == before


@pytest.mark.parametrize("renamed", [False, True])
def test_swap_interrupted_after_the_copy_is_finished_by_a_rerun(mongo_db, messages, renamed):
    before = snapshot(mongo_db)
    (manifest,) = backup(mongo_db, SWAP, "chat_messages")
    target, tmp = manifest["target"], manifest["tmp"]
    mongo_db.chat_messages.rename(tmp)  # back to before (or between) the two renames
    if not renamed:
        mongo_db[target].rename("chat_messages")
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "built"}})
    (done,) = backup(mongo_db, SWAP, "chat_messages")
    assert done["status"] == "complete"
    names = set(mongo_db.list_collection_names())
    assert {"chat_messages", target} <= names and tmp not in names
    assert snapshot(mongo_db)["chat_messages"] == before["chat_messages"]


def test_swap_that_cannot_finish_says_where_the_documents_are(mongo_db, messages):
    (manifest,) = backup(mongo_db, SWAP, "chat_messages")
    mongo_db.chat_messages.rename(manifest["tmp"])
    mongo_db.chat_messages.insert_one({"written": "by the service"})
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "built"}})
    with pytest.raises(BackupError, match=f"original documents are in {manifest['target']}"):
        backup(mongo_db, SWAP, "chat_messages")
    assert mongo_db[manifest["target"]].count_documents({}) == 7


def test_swap_never_renames_after_the_lock_is_lost(mongo_db, messages):
    before = snapshot(mongo_db)

    def lease_expires_once_the_copy_is_built():
        tmp = [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp_")]
        if tmp and mongo_db[tmp[0]].count_documents({}) == 7:
            raise LockLostError("lost the lock")

    with pytest.raises(LockLostError):
        backup(mongo_db, SWAP, "chat_messages", guard=lease_expires_once_the_copy_is_built)
    manifest = mongo_db[CFG.backups_collection].find_one()
    assert manifest["status"] == "copying"  # never marked built, never renamed
    assert manifest["target"] not in mongo_db.list_collection_names()
    assert snapshot(mongo_db)["chat_messages"] == before["chat_messages"]


def test_swap_sees_a_writer_and_swaps_nothing(mongo_db, messages):
    def a_writer_is_running():
        mongo_db.chat_messages.insert_one({"late": True})

    with pytest.raises(BackupError, match="changed while it was being backed up"):
        backup(mongo_db, SWAP, "chat_messages", guard=a_writer_is_running)
    manifest = mongo_db[CFG.backups_collection].find_one()
    names = set(mongo_db.list_collection_names())
    assert manifest["target"] not in names and manifest["tmp"] not in names


@NO_CAPPED
def test_collections_with_options_or_a_dot_are_copied_not_swapped(mongo_db):
    mongo_db.create_collection("checked", capped=True, size=1 << 20)
    mongo_db.checked.insert_many([{"n": i} for i in range(5)])
    mongo_db["fs.files"].insert_many([{"n": i} for i in range(3)])
    manifests = backup(mongo_db, SWAP, "checked", "fs.files")
    assert [m["method"] for m in manifests] == ["copy", "copy"]
    options = next(mongo_db.list_collections(filter={"name": "checked"}))["options"]
    assert options.get("capped")  # the live collection is the original one


def test_backup_needs_a_collection(mongo_db):
    with pytest.raises(OpError, match="at least one"):
        backup(mongo_db, COPY)


# ------------------------------------------------------------------------ indexes
def test_create_index_remembers_who_created_it(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="pre_n")
    with op_for(mongo_db) as op:
        assert op.create_index("chat_messages", [("n", 1)], name="pre_n") is False
        assert op.create_index("chat_messages", [("n", -1)], name="n_desc") is True
    with op_for(mongo_db) as op:
        assert op.create_index("chat_messages", [("n", -1)], name="n_desc") is False  # re-run
    restore(mongo_db)
    names = set(mongo_db.chat_messages.index_information())
    assert "pre_n" in names and "n_desc" not in names


def test_dropped_index_comes_back_on_restore(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", -1)], name="old_n")
    with op_for(mongo_db) as op:
        assert op.drop_index("chat_messages", "old_n") is True
    assert "old_n" not in mongo_db.chat_messages.index_information()
    restore(mongo_db)
    info = mongo_db.chat_messages.index_information()["old_n"]
    assert [tuple(k) for k in info["key"]] == [("n", -1)]


@DROP_FAILS
def test_a_collection_an_index_created_goes_only_while_empty(mongo_db):
    with op_for(mongo_db) as op:
        op.create_index("thumbs", [("k", 1)], name="k")
        op.create_index("used", [("k", 1)], name="k")
    mongo_db.used.insert_one({"k": 1})
    restore(mongo_db)
    assert "thumbs" not in mongo_db.list_collection_names()
    assert mongo_db.used.count_documents({}) == 1


def test_create_index_refuses_conflicting_options_or_keys(mongo_db, messages):
    mongo_db.chat_messages.create_index([("n", 1)], name="plain_n")
    with pytest.raises(OpError, match="options"), op_for(mongo_db) as op:
        op.create_index("chat_messages", [("n", 1)], name="uniq_n", unique=True)
    with pytest.raises(OpError, match="other keys"), op_for(mongo_db) as op:
        op.create_index("chat_messages", [("has_files", 1)], name="plain_n")


def test_duplicates_stop_a_unique_index_with_a_clear_error(mongo_db):
    mongo_db.files.insert_many([{"f": "a"}, {"f": "a"}, {"f": "b"}])
    with pytest.raises(OpError, match=r"1 duplicate f value\(s\) \(e.g. 'a' x2\)"), \
            op_for(mongo_db) as op:
        op.create_index("files", [("f", 1)], name="f_unique", unique=True)


def test_a_document_named_like_an_index_record_does_not_collide(mongo_db):
    from mongrate.runtime.store import Store

    Store(mongo_db, CFG).ensure_indexes()
    mongo_db.items.insert_one({"_id": "index:i7", "v": 1})
    with op_for(mongo_db) as op:
        op.create_index("items", [("v", 1)], name="i7")
        op.update_many("items", {}, {"$set": {"v": 2}})
    restore(mongo_db)
    assert mongo_db.items.find_one({"_id": "index:i7"})["v"] == 1
    assert "i7" not in mongo_db.items.index_information()


@pytest.mark.parametrize("strategy", [COPY, SWAP])
def test_backup_copies_on_the_server_where_it_can_and_says_so(mongo_db, messages, strategy):
    """The server's own copy ($out) where the server has a real one (MongoDB), streaming
    through the client where it has none (FerretDB 1.24) or where its copy changes with its
    source (mongo-java-server's memory backend); -v names the path, and
    the manifest's count and checksum are those of the snapshot either way."""
    import io

    from pymongo.errors import OperationFailure

    from mongrate.operations.strategy import server_copy
    from mongrate.progress import Reporter

    try:
        mongo_db.chat_messages.aggregate([{"$match": {}}, {"$out": "out_check"}]).close()
        has_out = mongo_db.out_check.count_documents({}) == 7
        # and a real copy: mongo-java-server's memory backend shares the documents
        mongo_db.chat_messages.update_many({}, {"$set": {"probe": 1}})
        has_out = has_out and mongo_db.out_check.count_documents({"probe": 1}) == 0
        mongo_db.chat_messages.update_many({}, {"$unset": {"probe": ""}})
    except OperationFailure:
        has_out = False
    finally:
        mongo_db.drop_collection("out_check")
    assert server_copy(mongo_db)[0] is has_out
    original = sorted(mongo_db.chat_messages.find(), key=lambda d: d["n"])
    said = io.StringIO()
    with revision_op(mongo_db, "r1", write_strategy=strategy, batch_size=2, defer=False,
                     reporter=Reporter(said, verbose=True)) as op:
        (manifest,) = op.backup_collection("chat_messages")
    line = next(ln for ln in said.getvalue().splitlines() if "backup of chat_messages" in ln)
    assert ("copied on the server (aggregate $out)" in line) is has_out
    assert ("streamed through the client" in line) is not has_out
    target = manifest["target"]
    assert (manifest["count"], manifest["checksum"]) == collection_checksum(mongo_db, target)
    assert sorted(mongo_db[target].find(), key=lambda d: d["n"]) == original
    assert sorted(mongo_db.chat_messages.find(), key=lambda d: d["n"]) == original
