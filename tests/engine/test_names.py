"""mongrate's own collection names: one module makes them and tells them apart."""

from __future__ import annotations

import pytest

from mongrate.config import Config
from mongrate.names import (
    PRERESTORE,
    PROBE,
    SCRATCH,
    SNAPSHOT,
    UNDO_SIDE,
    Owned,
    OwnNames,
    prerestore_name,
    probe_name,
    side_name,
    snapshot_name,
    tmp_name,
)

OWN = OwnNames.of(Config())


@pytest.mark.parametrize(("name", "owned"), [
    ("mongrate_version", Owned("version")),
    ("mongrate_log", Owned("log")),
    ("mongrate_lock", Owned("lock")),
    ("mongrate_undo", Owned("undo")),
    ("mongrate_backups", Owned("backups")),
    (side_name("mongrate_undo", "aaaa1111", "fs.files"), Owned(UNDO_SIDE, "aaaa1111", "fs.files")),
    (tmp_name("aaaa1111", 3, "chat_messages"), Owned(SCRATCH, "aaaa1111", "chat_messages")),
    (tmp_name("aaaa1111", "backup", "items"), Owned(SCRATCH, "aaaa1111", "items")),
    (probe_name("0123abcd", 4000), Owned(PROBE)),
    (snapshot_name("chat_messages", "20261207_120000"),
     Owned(SNAPSHOT, collection="chat_messages")),
    (prerestore_name("items", "20261207_120000"), Owned(PRERESTORE, collection="items")),
    ("chat_messages", None),
    ("mongrate_undo_without_dash", None),  # a side collection's name always has the '-'
    ("items_backup_latest", None),  # not a stamp: the user's own collection
])
def test_classify(name, owned):
    assert OWN.classify(name) == owned


def test_names_follow_the_config():
    own = OwnNames.of(Config(undo_collection="m_undo", version_collection="m_version"))
    assert own.classify("m_version") == Owned("version")
    assert own.classify("mongrate_version") is None
    assert own.classify("m_undo_bbbb2222-items") == Owned(UNDO_SIDE, "bbbb2222", "items")
    assert own.classify("mongrate_undo_bbbb2222-items") is None


def test_ours_lists_the_bookkeeping_not_the_snapshots():
    names = ["items", "mongrate_log", side_name("mongrate_undo", "aaaa1111", "items"),
             snapshot_name("items", "20261207_120000"), tmp_name("aaaa1111", 1, "items"),
             probe_name("ab", 20)]
    assert OWN.ours(names) == sorted([
        "mongrate_log", "mongrate_undo_aaaa1111-items", "mongrate_tmp_aaaa1111_1_items",
        "mongrate_probe_ab_20"])
    assert OWN.side_collections(names) == [("aaaa1111", "items")]
    assert OWN.side_collections(names, "bbbb2222") == []
