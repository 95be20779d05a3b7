"""The link rule end to end on hand-made sessions (schema + link revisions, then back)."""

from __future__ import annotations

from datetime import datetime, timedelta

from bson import ObjectId
from deepdiff import DeepDiff

from app_patch.testdata.seed import add_session
from tests.versions.conftest import LINK, SCHEMA, dump, run_revision

T0 = datetime(2025, 7, 1, 9, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def upload(db, file_id):
    return db.file_uploads.find_one({"file_id": file_id})


def message(db, hex_id):
    return db.chat_messages.find_one({"_id": ObjectId(hex_id)})


def migrate(db):
    run_revision(db, SCHEMA)
    return run_revision(db, LINK)


def test_several_files_on_one_message_all_listed(mongo_db):
    s = add_session(mongo_db, messages=[("user", "compare these", at(0)),
                                        ("assistant", "sure", at(5))],
                    uploads=[{"message": 0, "uploaded_at": at(-2)},                 # listed
                             {"message": 0, "uploaded_at": at(-1), "listed": False},
                             {"message": 0, "uploaded_at": at(-1.5), "listed": False,
                              "message_id": "", "kind": "pdf"}])
    results = migrate(mongo_db)
    carrier = message(mongo_db, s.message_ids[0])
    assert sorted(carrier["file_ids"]) == sorted(s.file_ids) and carrier["has_files"] is True
    assert carrier["file_ids"][0] == s.file_ids[0]  # ids it had keep their place
    assert all(upload(mongo_db, f)["message_id"] == s.message_ids[0] for f in s.file_ids)
    assert message(mongo_db, s.message_ids[1])["file_ids"] == []
    assert (results["already_linked"], results["linked"], results["orphaned"]) == (1, 2, 0)


def test_user_messages_seconds_apart(mongo_db):
    s = add_session(mongo_db, messages=[("user", "a", at(0)), ("user", "b", at(2)),
                                        ("user", "c", at(4)), ("user", "d", at(6))],
                    uploads=[{"uploaded_at": at(1.9)},   # nearest: b (0.1 s)
                             {"uploaded_at": at(3.0)},   # b and c equally near
                             {"uploaded_at": at(6.4)}])  # nearest: d
    results = migrate(mongo_db)
    got = [upload(mongo_db, f)["message_id"] for f in s.file_ids]
    assert got == [s.message_ids[1], s.message_ids[2], s.message_ids[3]]  # tie: the later one
    assert results["ambiguous"] == 1
    assert message(mongo_db, s.message_ids[0])["has_files"] is False


def test_wrong_message_ids_are_corrected(mongo_db):
    other = add_session(mongo_db, messages=[("user", "elsewhere", at(1))])
    s = add_session(mongo_db, messages=[("user", "look", at(0)), ("assistant", "ok", at(3)),
                                        ("user", "later", at(900))],
                    uploads=[{"message": 0, "listed": False, "uploaded_at": at(1)},
                             {"message": 0, "listed": False, "uploaded_at": at(1)},
                             {"message": 0, "listed": False, "uploaded_at": at(1)},
                             {"message": 0, "listed": False, "uploaded_at": at(1)},
                             {"message": 0, "listed": False, "uploaded_at": at(1)}])
    # the reply (the classic bug), a placeholder, nothing, another session, a far message
    wrong = [s.message_ids[1], "pending", str(ObjectId()), other.message_ids[0], s.message_ids[2]]
    for file_id, bad in zip(s.file_ids, wrong, strict=True):
        mongo_db.file_uploads.update_one({"file_id": file_id}, {"$set": {"message_id": bad}})
    results = migrate(mongo_db)
    assert [upload(mongo_db, f)["message_id"] for f in s.file_ids] == [s.message_ids[0]] * 5
    assert results["linked"] == 5
    assert sorted(message(mongo_db, s.message_ids[0])["file_ids"]) == sorted(s.file_ids)
    assert message(mongo_db, other.message_ids[0]).get("file_ids") == []


def test_message_id_naming_a_near_user_message_is_trusted(mongo_db):
    s = add_session(mongo_db, messages=[("user", "one", at(0)), ("user", "two", at(20))],
                    uploads=[{"message": 0, "listed": False, "uploaded_at": at(15)}])
    migrate(mongo_db)
    assert upload(mongo_db, s.file_ids[0])["message_id"] == s.message_ids[0]  # not the nearer


def test_listing_message_preferred_and_other_users_ignored(mongo_db):
    sid = "shared-session"
    bob = add_session(mongo_db, session_id=sid, user_id="bob",
                      messages=[("user", "bob asks", at(10))])
    s = add_session(mongo_db, session_id=sid, user_id="alice",
                    messages=[("user", "first", at(0)), ("user", "second", at(9))],
                    uploads=[{"message": 0, "uploaded_at": at(8.5), "message_id": ""}])
    migrate(mongo_db)
    assert upload(mongo_db, s.file_ids[0])["message_id"] == s.message_ids[0]  # it lists it
    assert message(mongo_db, bob.message_ids[0])["file_ids"] == []


def test_missing_gridfs_files_are_flagged_and_still_linked(mongo_db):
    s = add_session(mongo_db, messages=[("user", "here", at(0))],
                    uploads=[{"message": 0, "gridfs": False, "listed": False,
                              "mime": "image/png"}])
    migrate(mongo_db)
    row = upload(mongo_db, s.file_ids[0])
    assert row["file_missing"] is True and row["is_image"] is False
    assert row["mime_type"] == "image/png" and row["message_id"] == s.message_ids[0]
    assert message(mongo_db, s.message_ids[0])["file_ids"] == s.file_ids


def test_orphans_are_reported_and_left_alone(mongo_db):
    s = add_session(mongo_db, messages=[("user", "hi", at(0)), ("assistant", "hey", at(4))],
                    uploads=[{"uploaded_at": at(3 * 3600), "message_id": "temp"},
                             {"uploaded_at": at(-1800)}])
    run_revision(mongo_db, SCHEMA)
    before = [upload(mongo_db, f) for f in s.file_ids]
    results = run_revision(mongo_db, LINK)
    assert results["orphaned"] == 2 and results["linked"] == 0
    assert [upload(mongo_db, f) for f in s.file_ids] == before


def test_crafted_sessions_round_trip(mongo_db):
    add_session(mongo_db, messages=[("user", "x", at(0), {"file_ids": None}),
                                    ("user", "y", at(1), {"has_files": True})],
                uploads=[{"uploaded_at": at(0.4)}, {"message": 1, "listed": False}])
    before = dump(mongo_db)
    migrate(mongo_db)
    assert DeepDiff(before, dump(mongo_db)) != {}
    run_revision(mongo_db, LINK, "downgrade")
    run_revision(mongo_db, SCHEMA, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}
