"""The pure rules of the revisions: file fields, upload facts, the link rule, BSON order."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from bson import ObjectId
from bson.int64 import Int64

from app_patch.rules import (
    LINK_WINDOW,
    MessageRef,
    Outcome,
    UploadRef,
    choose_carrier,
    link_group,
    message_file_changes,
    normalise_file_ids,
    upload_file_changes,
)
from mongrate.mongo.order import bson_order_key

T0 = datetime(2025, 6, 2, 12, 0, 0)
A, B = "a" * 24, "b" * 24


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("value", "expected"), [
    (None, []),
    ([], []),
    ([A, B], [A, B]),
    ([A, A, "", None, 7, B], [A, B]),
    ([ObjectId("6877691ec45ce76d3272e5ed")], ["6877691ec45ce76d3272e5ed"]),
    (A, [A]),
])
def test_normalise_file_ids(value, expected):
    assert normalise_file_ids(value) == expected


@pytest.mark.parametrize(("doc", "expected"), [
    ({}, {"file_ids": [], "has_files": False}),
    ({"file_ids": None, "has_files": True}, {"file_ids": [], "has_files": False}),
    ({"file_ids": [], "has_files": True}, {"has_files": False}),
    ({"file_ids": [A]}, {"has_files": True}),
    ({"file_ids": [A], "has_files": False}, {"has_files": True}),
    ({"file_ids": [A], "has_files": 1}, {"has_files": True}),  # 1 is not a bool
    ({"file_ids": [ObjectId(A)], "has_files": True}, {"file_ids": [A]}),
    ({"file_ids": [A, B], "has_files": True}, {}),
    ({"file_ids": [], "has_files": False}, {}),
])
def test_message_file_changes(doc, expected):
    assert message_file_changes(doc) == expected
    fixed = {**doc, **expected}
    assert message_file_changes(fixed) == {}  # a re-run changes nothing


def test_upload_facts_true_type_claim_kept_and_size():
    row = {"mime_type": "image/jpeg", "file_size": 10}
    changes = upload_file_changes(row, 2048, "image/png")
    assert changes == {"mime_type": "image/png", "is_image": True, "file_size": 2048,
                       "file_missing": False, "claimed_mime_type": "image/jpeg"}
    assert upload_file_changes({**row, **changes}, 2048, "image/png") == {}


def test_upload_facts_agreeing_claim_is_not_duplicated_and_pdf_is_no_image():
    row = {"mime_type": "application/pdf", "file_size": 5, "is_image": False,
           "file_missing": False}
    assert upload_file_changes(row, 5, "application/pdf") == {}
    assert upload_file_changes({"mime_type": "image/png"}, 5, "application/pdf") == {
        "mime_type": "application/pdf", "is_image": False, "file_size": 5,
        "file_missing": False, "claimed_mime_type": "image/png"}


def test_upload_facts_missing_file_flagged_and_claims_kept():
    row = {"mime_type": "image/png", "file_size": 99}
    assert upload_file_changes(row, None, None) == {"file_missing": True, "is_image": False}


def test_upload_facts_size_type_matters():
    row = {"mime_type": "text/plain", "is_image": False, "file_missing": False,
           "file_size": Int64(12)}
    assert upload_file_changes(row, 12, "text/plain") == {}
    assert upload_file_changes({**row, "file_size": 12.0}, 12, "text/plain") == {"file_size": 12}


# ----------------------------------------------------------------------- linking
def msg(seconds: float, *files: str) -> MessageRef:
    return MessageRef(ObjectId(), at(seconds), tuple(files))


def up(seconds: float | None, file_id: str = A, message_id: object = "") -> UploadRef:
    return UploadRef(ObjectId(), file_id, message_id, None if seconds is None else at(seconds))


def test_nearest_user_message_within_the_window():
    m1, m2 = msg(0), msg(100)
    chosen, evidence, ambiguous = choose_carrier(up(90), [m1, m2])
    assert (chosen, evidence, ambiguous) == (m2, "nearest", False)


def test_outside_the_window_is_orphaned():
    m1 = msg(0)
    far = LINK_WINDOW.total_seconds() + 1
    assert choose_carrier(up(far), [m1])[0] is None
    assert choose_carrier(up(far - 2), [m1])[0] is m1


def test_listing_message_wins_over_a_nearer_one_even_outside_the_window():
    lister, near = msg(-3600, A), msg(2)
    chosen, evidence, _ = choose_carrier(up(0), [lister, near])
    assert (chosen, evidence) == (lister, "listed")


def test_message_id_naming_a_candidate_beats_time_but_not_a_listing():
    m1, m2 = msg(0), msg(20)
    chosen, evidence, _ = choose_carrier(up(18, message_id=str(m1.id)), [m1, m2])
    assert (chosen, evidence) == (m1, "message_id")
    lister = msg(40, A)
    assert choose_carrier(up(18, message_id=str(m1.id)), [m1, m2, lister])[0] is lister


def test_wrong_message_id_is_ignored():
    m1, m2 = msg(0), msg(300)
    for wrong in (str(ObjectId()), "pending", "", None, str(m2.id)):  # m2: out of window
        chosen, evidence, _ = choose_carrier(up(3, message_id=wrong), [m1, m2])
        assert (chosen, evidence) == (m1, "nearest"), wrong


def test_user_messages_seconds_apart_are_flagged_ambiguous_when_equidistant():
    m1, m2 = msg(0), msg(2)
    chosen, evidence, ambiguous = choose_carrier(up(1), [m1, m2])
    assert (chosen, evidence, ambiguous) == (m2, "nearest", True)  # tie: the later one
    chosen, _, ambiguous = choose_carrier(up(0.2), [m1, msg(3)])
    assert chosen is m1 and not ambiguous


def test_upload_without_time_links_only_by_listing():
    m1 = msg(0, A)
    assert choose_carrier(up(None), [m1])[0] is m1
    assert choose_carrier(up(None), [msg(0)])[0] is None


def test_link_group_several_files_per_message_and_outcomes():
    carrier = msg(10, A)           # lists A already
    other = msg(500)
    uploads = [up(8, A, message_id=str(carrier.id)),   # already linked
               up(9, B, message_id=""),                # linked: carrier must list B
               up(501, "c" * 24, message_id="pending"),  # linked to `other`
               up(4000, "d" * 24)]                     # orphaned
    links = link_group(uploads, [carrier, other])
    outcomes = [d.outcome for d in links.decisions]
    assert outcomes == [Outcome.ALREADY_LINKED, Outcome.LINKED, Outcome.LINKED, Outcome.ORPHANED]
    assert links.additions == {carrier.id: [B], other.id: ["c" * 24]}
    assert [d.message for d in links.decisions] == [carrier, carrier, other, None]


def test_link_group_listed_but_message_id_wrong_is_linked_not_already():
    carrier = msg(10, A)
    links = link_group([up(8, A, message_id=str(ObjectId(carrier.id.binary[:11] + b"\0")))],
                       [carrier])
    assert links.decisions[0].outcome is Outcome.LINKED and links.additions == {}


def test_link_group_keeps_upload_order_in_additions():
    carrier = msg(10)
    uploads = [up(9, B), up(7, A)]
    assert link_group(uploads, [carrier]).additions == {carrier.id: [A, B]}


# -------------------------------------------------------------------- BSON order
def test_bson_order_key_types_and_values():
    values = [None, -1, 2.5, Int64(3), "", "a", "é", {"a": 1}, [1], b"x", ObjectId(), False,
              True, T0]
    assert sorted(reversed(values), key=bson_order_key) == values
