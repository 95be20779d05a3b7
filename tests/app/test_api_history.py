"""GET /sessions/{id}/history: the guide's upload format, order, pagination, round trips."""

from __future__ import annotations

import pytest
from bson import ObjectId
from gridfs import GridFSBucket

from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, BOB, apply_contract, at

#: An upload entry of a non-image in the original's history (session_routes.py, chat.py).
FILE_KEYS = [
    "file_id", "name", "mime", "size", "type", "url", "download_url", "is_image", "uploaded_at",
]
#: An image's: the same plus its thumbnails.
IMAGE_KEYS = [*FILE_KEYS, "thumbnail_url", "thumbnail_small", "thumbnail_medium"]
MESSAGE_KEYS = [
    "id", "role", "content", "created_at", "session_id", "file_ids", "has_files", "uploads",
]


def history(client, session_id, headers, **params):
    return client.get(f"/api/v1/chat/sessions/{session_id}/history", headers=headers, params=params)


def test_history_lists_messages_in_time_order_with_uploads_in_the_guide_format(
    client, mongo_db, alice
):
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[
            ("user", "Can you describe this image?", at(0)),
            ("assistant", "A gradient.", at(5)),
            ("user", "and these?", at(10)),
        ],
        uploads=[
            {"kind": "png", "message": 0, "mime": "image/jpeg", "name": "test_image.png"},
            {"kind": "pdf", "message": 2, "mime": "image/png", "name": "doc.png"},
            {"kind": "jpeg", "message": 2, "mime": "application/octet-stream", "name": "фото.jpg"},
        ],
    )
    apply_contract(mongo_db)
    r = history(client, s.session_id, alice)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["id"] for m in body["history"]] == s.message_ids
    assert [m["role"] for m in body["history"]] == ["user", "assistant", "user"]
    assert body["count"] == 3 and body["has_more"] is False and body["next_before"] is None
    assert list(body)[:2] == ["history", "count"]
    assert all(list(m) == MESSAGE_KEYS for m in body["history"])
    first, second, third = body["history"]
    assert second["uploads"] == [] and second["has_files"] is False and second["file_ids"] == []
    png = first["uploads"][0]
    assert list(png) == IMAGE_KEYS
    fid = s.file_ids[0]
    row = mongo_db.file_uploads.find_one({"file_id": fid})
    assert png == {
        "file_id": fid,
        "name": "test_image.png",
        "mime": "image/png",  # the sniffed type, not the claimed image/jpeg
        "size": png["size"],  # checked against GridFS below
        "type": "file",
        "url": f"/api/v1/chat/files/{fid}",
        "download_url": f"/api/v1/chat/files/{fid}?download=true",
        "is_image": True,
        "uploaded_at": row["uploaded_at"].isoformat(),
        "thumbnail_url": f"/api/v1/chat/files/{fid}/thumbnail",
        "thumbnail_small": f"/api/v1/chat/files/{fid}/thumbnail?size=100",
        "thumbnail_medium": f"/api/v1/chat/files/{fid}/thumbnail?size=300",
    }
    assert png["size"] == mongo_db["fs.files"].find_one({"_id": ObjectId(fid)})["length"]
    assert [(u["name"], u["mime"], u["is_image"]) for u in third["uploads"]] == [
        ("doc.png", "application/pdf", False),
        ("фото.jpg", "image/jpeg", True),
    ]
    pdf = third["uploads"][0]
    assert list(pdf) == FILE_KEYS, "a non-image advertises no thumbnail, as in the original"
    assert third["file_ids"] == s.file_ids[1:] and third["has_files"] is True


def _big_session(db, n_messages, every, user=ALICE):
    messages = [("user" if i % 2 == 0 else "assistant", f"m{i}", at(i)) for i in range(n_messages)]
    uploads = [{"kind": "png", "message": i} for i in range(0, n_messages, every)]
    return add_session(db, user_id=user, messages=messages, uploads=uploads)


@pytest.mark.parametrize("params", [{"limit": 1000}, {}], ids=["limit", "whole_session"])
def test_history_costs_the_same_round_trips_for_5_or_300_messages(
    client, mongo_db, alice, command_log, params
):
    small = _big_session(mongo_db, 6, 2)
    large = _big_session(mongo_db, 300, 2)
    apply_contract(mongo_db)
    counts = {}
    for s in (small, large):
        command_log.clear()
        r = history(client, s.session_id, alice, **params)
        assert r.status_code == 200
        assert r.json()["count"] == len(s.message_ids)
        assert sum(len(m["uploads"]) for m in r.json()["history"]) == len(s.file_ids)
        counts[s.session_id] = command_log.data_commands()
    assert counts[small.session_id] == counts[large.session_id]
    assert [name for name, _ in counts[large.session_id]] == ["find", "find", "find"]
    assert [target for _, target in counts[large.session_id]] == [
        "chat_sessions",
        "chat_messages",
        "file_uploads",
    ]


def test_pages_walk_back_through_the_whole_session_without_gaps(client, mongo_db, alice):
    # Several messages share a timestamp: the _id breaks the tie in the cursor.
    messages = [("user", f"m{i}", at(i // 3)) for i in range(25)]
    s = add_session(mongo_db, user_id=ALICE, messages=messages)
    apply_contract(mongo_db)
    order = [
        str(m["_id"])
        for m in mongo_db.chat_messages.find({"session_id": s.session_id}).sort(
            [("created_at", 1), ("_id", 1)]
        )
    ]
    seen, before, pages = [], None, 0
    while True:
        params = {"limit": 7} | ({"before": before} if before else {})
        body = history(client, s.session_id, alice, **params).json()
        pages += 1
        ids = [m["id"] for m in body["history"]]
        assert ids == sorted(ids, key=order.index), "each page is in time order"
        seen = ids + seen
        if not body["has_more"]:
            assert body["next_before"] is None
            break
        before = body["next_before"]
    assert seen == order and pages == 4
    # A bare message id also works as the cursor.
    body = history(client, s.session_id, alice, limit=5, before=order[10]).json()
    assert [m["id"] for m in body["history"]] == order[5:10]


HEX = "0123456789abcdef01234567"


@pytest.mark.parametrize(
    "before",
    [
        "nonsense",
        "123_nothex",
        "12_" + "z" * 24,
        "253402300800000_" + HEX,  # the first millisecond of year 10000
        "99999999999999999_" + HEX,  # past what timedelta holds
        "9" * 5000 + "_" + HEX,  # past what int() converts
        "\u0661\u0662_" + HEX,  # Arabic-Indic digits: int() reads them, we do not
        "1_000_" + HEX,  # int() would read "1_000"
    ],
    ids=["word", "bad-id", "z-id", "year-10000", "17-digits", "5000-digits", "arabic", "under"],
)
def test_a_cursor_we_did_not_hand_out_is_a_422(client, mongo_db, alice, before):
    s = add_session(mongo_db, user_id=ALICE, messages=[("user", "hi", at(0))])
    assert history(client, s.session_id, alice, before=before).status_code == 422


def test_without_limit_the_whole_session_comes_back_as_the_original_sent_it(
    client, mongo_db, alice
):
    """130 messages: the original client never reads has_more, so nothing may be cut off."""
    s = _big_session(mongo_db, 130, 13)
    apply_contract(mongo_db)
    body = history(client, s.session_id, alice).json()
    assert [m["id"] for m in body["history"]] == s.message_ids
    assert body["count"] == 130 and body["has_more"] is False and body["next_before"] is None
    # Paging is still there for those who ask for it.
    page = history(client, s.session_id, alice, limit=100).json()
    assert [m["id"] for m in page["history"]] == s.message_ids[30:]
    assert page["has_more"] is True
    rest = history(client, s.session_id, alice, before=page["next_before"]).json()
    assert [m["id"] for m in rest["history"]] == s.message_ids[:30]


def test_limit_is_checked_and_capped(client, mongo_db, alice, settings):
    n = settings.history_max_limit + 5
    s = add_session(mongo_db, user_id=ALICE, messages=[("user", f"{i}", at(i)) for i in range(n)])
    assert history(client, s.session_id, alice, limit=0).status_code == 422
    body = history(client, s.session_id, alice, limit=10**9).json()
    assert body["count"] == settings.history_max_limit and body["has_more"] is True


def test_another_users_session_is_a_404_like_a_missing_one(client, mongo_db, alice, bob):
    s = add_session(mongo_db, user_id=ALICE, messages=[("user", "secret", at(0))])
    mine = history(client, s.session_id, alice)
    theirs = history(client, s.session_id, bob)
    missing = history(client, "no-such-session", bob)
    assert mine.status_code == 200
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_untidy_pre_migration_data_is_still_rendered(client, mongo_db, alice):
    """No apply_contract: null/absent file_ids, rows linked only by message_id, orphans."""
    foreign = add_session(
        mongo_db,
        user_id=BOB,
        messages=[("user", "x", at(0))],
        uploads=[{"kind": "png", "message": 0}],
    )
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[
            ("user", "null ids", at(0), {"file_ids": None, "has_files": True}),
            ("user", "linked only", at(10)),
            ("user", "lists an orphan and a foreign file", at(20)),
            ("assistant", "absent", at(30)),
        ],
        uploads=[{"kind": "jpeg", "message": 1, "listed": False, "name": "linked.jpg"}],
    )
    orphan = GridFSBucket(mongo_db).upload_from_stream(
        "orphan.gif",
        sample_variant("gif_animated", 0).data,
        metadata={"user_id": ALICE, "session_id": s.session_id, "original_name": "orphan.gif"},
    )
    mongo_db.chat_messages.update_one(
        {"_id": ObjectId(s.message_ids[2])},
        {"$set": {"file_ids": [str(orphan), foreign.file_ids[0]], "has_files": True}},
    )
    body = history(client, s.session_id, alice).json()
    null_ids, linked, lists, absent = body["history"]
    assert (null_ids["file_ids"], null_ids["has_files"], null_ids["uploads"]) == ([], False, [])
    assert [u["name"] for u in linked["uploads"]] == ["linked.jpg"]
    assert linked["file_ids"] == [s.file_ids[0]] and linked["has_files"]
    # Bob's file id listed in Alice's message is never described to Alice.
    assert [(u["file_id"], u["name"], u["is_image"]) for u in lists["uploads"]] == [
        (str(orphan), "orphan.gif", True)
    ]
    assert absent["uploads"] == [] and absent["has_files"] is False


def test_missing_gridfs_file_is_listed_but_not_an_image(client, mongo_db, alice):
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "gone", at(0))],
        uploads=[{"kind": "png", "message": 0, "gridfs": False}],
    )
    apply_contract(mongo_db)
    (msg,) = history(client, s.session_id, alice).json()["history"]
    assert [(u["file_id"], u["is_image"]) for u in msg["uploads"]] == [(s.file_ids[0], False)]
    assert client.get(msg["uploads"][0]["url"], headers=alice).status_code == 404


def test_a_session_without_a_row_shows_only_the_callers_messages(
    client, mongo_db, alice, bob, command_log
):
    """Old deployments have sessions with no chat_sessions row: anyone with a message in one
    passes the ownership check, so the message query itself must keep to the caller's."""
    mine = add_session(mongo_db, user_id=ALICE, messages=[("user", "alice 1", at(0))])
    add_session(
        mongo_db,
        user_id=BOB,
        session_id=mine.session_id,
        messages=[("user", "bob's secret", at(1)), ("assistant", "bob's answer", at(2))],
    )
    mongo_db.chat_sessions.delete_many({"session_id": mine.session_id})
    command_log.clear()
    body = history(client, mine.session_id, alice).json()
    assert [m["content"] for m in body["history"]] == ["alice 1"]
    assert len(command_log.data_commands()) == 4  # no row: one more ownership query, no more
    theirs = history(client, mine.session_id, bob).json()
    assert [m["content"] for m in theirs["history"]] == ["bob's secret", "bob's answer"]
    # A bare message id of someone else's is no cursor for the caller.
    assert (
        history(client, mine.session_id, alice, before=theirs["history"][1]["id"]).status_code
        == 422
    )
