"""Each revision on its own, on seeded data with every untidy case: upgrade, re-run, downgrade."""

from __future__ import annotations

import gridfs
import pytest
from bson import ObjectId
from deepdiff import DeepDiff

from app_patch.rules import SNIFF_BYTES
from app_patch.sniff import is_image_mime, sniff_mime
from mongrate.errors import OpError
from mongrate.mongo.collections import collection_checksum
from tests.versions.conftest import (
    BACKUP,
    CFG,
    INDEXES,
    LINK,
    SCHEMA,
    dump,
    revision_module,
    run_revision,
)

NEW_UPLOAD_FIELDS = {"mime_type", "is_image", "file_size", "file_missing", "claimed_mime_type"}


def by_id(db, name):
    return {d["_id"]: d for d in db[name].find()}


# ------------------------------------------------------------------------- backup
def test_backup_snapshots_verified_manifests(mongo_db, seeded):
    before = dump(mongo_db)
    results = run_revision(mongo_db, BACKUP)
    stamp = results["backup_id"]
    manifests = {m["source"]: m for m in mongo_db[CFG.backups_collection].find()}
    assert set(manifests) == {"chat_messages", "file_uploads", "chat_sessions", "fs.files"}
    for source, m in manifests.items():
        target = f"{source}_backup_{stamp}"
        assert m["target"] == target and m["status"] == "complete" and m["revision"] == BACKUP
        assert (m["count"], m["checksum"]) == collection_checksum(mongo_db, source)
        assert m["created_at"] and m["finished_at"]
        assert DeepDiff(dump(mongo_db, [source])[source]["docs"],
                        dump(mongo_db, [target])[target]["docs"]) == {}
        assert results[f"{source} backed up"] == m["count"]
    # GridFS bytes are not copied: no revision changes them
    assert not [n for n in mongo_db.list_collection_names() if "chunks" in n and n != "fs.chunks"]

    assert run_revision(mongo_db, BACKUP)["backup_id"] == stamp  # re-run: kept as is
    assert mongo_db[CFG.backups_collection].count_documents({}) == 4

    run_revision(mongo_db, BACKUP, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}
    assert {m["status"] for m in mongo_db[CFG.backups_collection].find()} == {"dropped"}


def test_backup_interrupted_copy_is_started_over(mongo_db, seeded):
    run_revision(mongo_db, BACKUP)
    # an interrupted run: a manifest still copying and a half-made snapshot (fs.files is
    # copied, never swapped: FerretDB cannot rename a name with a dot)
    manifest = mongo_db[CFG.backups_collection].find_one({"source": "fs.files"})
    assert manifest["method"] == "copy"
    mongo_db[CFG.backups_collection].update_one({"_id": manifest["_id"]},
                                                {"$set": {"status": "copying"}})
    mongo_db[manifest["target"]].delete_many({})
    run_revision(mongo_db, BACKUP)
    assert collection_checksum(mongo_db, manifest["target"]) == \
        collection_checksum(mongo_db, "fs.files")


# ------------------------------------------------------------------------- schema
def test_schema_fields_true_types_and_missing_files(mongo_db, seeded):
    before = dump(mongo_db)
    old_msgs, old_ups = by_id(mongo_db, "chat_messages"), by_id(mongo_db, "file_uploads")
    results = run_revision(mongo_db, SCHEMA)

    msgs = by_id(mongo_db, "chat_messages")
    assert msgs.keys() == old_msgs.keys()
    for _id, doc in msgs.items():
        assert isinstance(doc["file_ids"], list) and all(isinstance(f, str) for f in doc["file_ids"])
        assert doc["has_files"] is (len(doc["file_ids"]) > 0)
        old = old_msgs[_id]
        assert {k: v for k, v in doc.items() if k not in ("file_ids", "has_files")} == \
            {k: v for k, v in old.items() if k not in ("file_ids", "has_files")}
        if isinstance(old.get("file_ids"), list):
            assert doc["file_ids"] == old["file_ids"]  # lists were already hex strings
    fixed = sum(1 for _id in msgs if msgs[_id] != old_msgs[_id])
    assert results["chat_messages changed"] == fixed > 0

    bucket = gridfs.GridFSBucket(mongo_db)
    ups = by_id(mongo_db, "file_uploads")
    assert ups.keys() == old_ups.keys()  # never deleted
    missing = set(seeded.missing_gridfs)
    for _id, doc in ups.items():
        old = old_ups[_id]
        kept = {k: v for k, v in old.items() if k not in NEW_UPLOAD_FIELDS}
        assert {k: v for k, v in doc.items() if k not in NEW_UPLOAD_FIELDS} == kept
        if doc["file_id"] in missing:
            assert doc["file_missing"] is True and doc["is_image"] is False
            assert (doc["mime_type"], doc["file_size"]) == (old["mime_type"], old["file_size"])
            assert "claimed_mime_type" not in doc
            continue
        data = bucket.open_download_stream(ObjectId(doc["file_id"])).read()
        true = sniff_mime(data[:SNIFF_BYTES])
        assert doc["mime_type"] == true and doc["file_missing"] is False
        assert doc["is_image"] is is_image_mime(true)
        assert doc["file_size"] == len(data)
        if old["mime_type"] != true:
            assert doc["claimed_mime_type"] == old["mime_type"]
        else:
            assert "claimed_mime_type" not in doc
    assert results["files_missing"] == len(missing) > 0
    kinds = {fid: seeded.samples[fid][0] for fid in seeded.samples}
    png_as_jpeg = [d for d in ups.values()
                   if d.get("claimed_mime_type") == "image/jpeg" and d["mime_type"] == "image/png"]
    pdf_as_png = [d for d in ups.values()
                  if d.get("claimed_mime_type") == "image/png" and kinds[d["file_id"]] == "pdf"]
    assert png_as_jpeg and pdf_as_png and all(not d["is_image"] for d in pdf_as_png)

    after = dump(mongo_db)
    run_revision(mongo_db, SCHEMA)  # re-run: nothing changes
    assert DeepDiff(after, dump(mongo_db)) == {}
    run_revision(mongo_db, SCHEMA, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}
    assert not [n for n in mongo_db.list_collection_names() if n.startswith("mongrate_tmp")]


# --------------------------------------------------------------------------- link
def test_link_on_seeded_data_against_ground_truth(mongo_db, seeded):
    run_revision(mongo_db, SCHEMA)
    before = dump(mongo_db)
    old_ups = by_id(mongo_db, "file_uploads")
    results = run_revision(mongo_db, LINK)
    msgs, ups = by_id(mongo_db, "chat_messages"), by_id(mongo_db, "file_uploads")
    outcomes = ("linked", "already_linked", "ambiguous", "orphaned")
    assert sum(results[k] for k in outcomes) == len(ups)

    right = linked = 0
    for _id, doc in ups.items():
        truth = seeded.truth[doc["file_id"]]
        carrier = msgs.get(ObjectId(doc["message_id"])) if ObjectId.is_valid(
            doc["message_id"]) else None
        if truth is None:  # orphaned in the seed: nothing is plausible, left alone
            assert doc == old_ups[_id]
            continue
        assert carrier is not None, doc
        linked += 1
        right += doc["message_id"] == truth
        assert carrier["role"] == "user"
        assert (carrier["session_id"], carrier["user_id"]) == (doc["session_id"], doc["user_id"])
        assert doc["file_id"] in carrier["file_ids"] and carrier["has_files"] is True
    assert results["orphaned"] == sum(1 for t in seeded.truth.values() if t is None) > 0
    assert right / linked >= 0.95, (right, linked)
    for doc in msgs.values():  # the contract still holds after linking
        assert doc["has_files"] is (len(doc["file_ids"]) > 0)
    carriers = {}
    for doc in ups.values():
        carriers.setdefault(doc["message_id"], []).append(doc["file_id"])
    several = [m for m, files in carriers.items() if len(files) > 1 and ObjectId.is_valid(m)
               and msgs.get(ObjectId(m))]
    assert several and all(set(carriers[m]) <= set(msgs[ObjectId(m)]["file_ids"]) for m in several)

    after = dump(mongo_db)
    again = run_revision(mongo_db, LINK)  # re-run: its passes are done, nothing is written
    assert again["chat_messages changed"] == results["chat_messages changed"]
    assert DeepDiff(after, dump(mongo_db)) == {}
    run_revision(mongo_db, LINK, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}


def test_link_alone_on_untouched_data_and_back(mongo_db, seeded):
    before = dump(mongo_db)
    results = run_revision(mongo_db, LINK)
    assert results["linked"] > 0
    run_revision(mongo_db, LINK, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}


# ------------------------------------------------------------------------ indexes
def test_indexes_created_if_absent_and_dropped_only_if_created(mongo_db, seeded):
    mongo_db.chat_messages.create_index([("session_id", 1), ("created_at", 1)],
                                        name="legacy_session_time")
    before = dump(mongo_db)
    results = run_revision(mongo_db, INDEXES)
    spec = revision_module(INDEXES).INDEXES
    assert results == {"indexes_created": len(spec) - 1, "indexes_present": 1}
    for collection, keys, name, options in spec:
        info = mongo_db[collection].index_information()
        if name == "session_created":
            assert name not in info and info["legacy_session_time"]["key"] == keys
            continue
        assert info[name]["key"] == keys
        assert bool(info[name].get("unique")) == bool(options.get("unique"))
    assert run_revision(mongo_db, INDEXES) == {"indexes_created": 0, "indexes_present": len(spec)}
    run_revision(mongo_db, INDEXES, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}  # thumbnails.files gone again, legacy kept
    assert "thumbnails.files" not in mongo_db.list_collection_names()


def test_thumbnail_collection_in_use_is_kept_on_downgrade(mongo_db, seeded):
    run_revision(mongo_db, INDEXES)
    mongo_db["thumbnails.files"].insert_one({"filename": "x_100_v1", "length": 0})
    run_revision(mongo_db, INDEXES, "downgrade")
    assert mongo_db["thumbnails.files"].count_documents({}) == 1
    assert "thumb_key" not in mongo_db["thumbnails.files"].index_information()


def test_duplicate_file_ids_stop_the_unique_index_with_a_clear_error(mongo_db, seeded):
    row = mongo_db.file_uploads.find_one({}, {"_id": 0})
    mongo_db.file_uploads.insert_one(row)
    with pytest.raises(OpError, match="duplicate file_id .*remove or merge"):
        run_revision(mongo_db, INDEXES)
