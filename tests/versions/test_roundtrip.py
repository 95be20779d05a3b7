"""The whole chain through the real ``mongrate`` command: round trip, SIGKILL and resume,
backup restore after a corruption."""

from __future__ import annotations

import re
import uuid

import pytest
from deepdiff import DeepDiff

from app_patch.testdata.seed import seed
from mongrate.config import with_database
from mongrate.mongo.collections import is_ferretdb_v1
from mongrate.testing.kit import snapshot
from tests.versions.conftest import (
    BACKUP,
    CFG,
    CHAIN,
    INDEXES,
    LINK,
    SCHEMA,
    SMALL,
    Cli,
    dump,
)

STAMP = re.compile(r"_\d{8}_\d{6}$")
#: What holds on the rewrite strategy only (FerretDB 1.x); mongo-java-server gets in_place
REWRITE_ONLY = pytest.mark.skip_server(
    "javaserver", reason="checks the rewrite strategy (folded passes, copies and swaps); "
                         "the probe picks in_place on this server")


def normalised(db) -> dict:
    """dump() with backup stamps taken out of collection names (they differ run to run)."""
    return {STAMP.sub("_STAMP", name): v for name, v in dump(db).items()}


def heads(db) -> list[str]:
    return sorted(db[CFG.version_collection].distinct("_id"))


@pytest.fixture(scope="module")
def clean_run(mongo_client, mongo_server_url, tmp_path_factory):
    """The same seeded data migrated without interruption: (before, after) dumps."""
    name = f"t_clean_{uuid.uuid4().hex[:8]}"
    db = mongo_client[name]
    seed(db, **SMALL, seed=3)
    before = normalised(db)
    cli = Cli(tmp_path_factory.mktemp("clean"), with_database(mongo_server_url, name))
    r = cli.run("upgrade", "head")
    assert r.code == 0, r.err
    yield before, normalised(db)
    mongo_client.drop_database(name)


def test_upgrade_head_then_downgrade_base_is_identical(mongo_db, cli, clean_run):
    seed(mongo_db, **SMALL, seed=3)
    before = dump(mongo_db)
    r = cli.run("upgrade", "head")
    assert r.code == 0, r.err
    if is_ferretdb_v1(mongo_db):  # rewrite: the backup's swap and the schema revision's
        # message change are made by the link revision's pass (in_place: each its own)
        assert (f"chat_messages: one pass writes the changes of {BACKUP}:1, {SCHEMA}:1, "
                f"{LINK}:1") in r.err
        assert f"file_uploads: one pass writes the changes of {BACKUP}:1, {SCHEMA}:2" in r.err
    assert heads(mongo_db) == [INDEXES]
    for rev in CHAIN:
        assert f"upgraded {rev}" in r.out
    assert re.search(r"^ +orphaned: +[1-9]", r.out, re.M) and re.search(r"^ +linked:", r.out, re.M)
    assert DeepDiff(clean_run[1], normalised(mongo_db)) == {}  # same data, same result
    r = cli.run("downgrade", "base")
    assert r.code == 0, r.err
    assert heads(mongo_db) == []
    assert DeepDiff(before, dump(mongo_db)) == {}
    leftovers = [n for n in mongo_db.list_collection_names()
                 if n.startswith("mongrate") and n not in (
                     CFG.version_collection, CFG.log_collection, CFG.lock_collection,
                     CFG.undo_collection, CFG.backups_collection)]
    assert leftovers == []
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0
    r = cli.run("upgrade", "head")  # and again, with a new backup id
    assert r.code == 0, r.err
    assert DeepDiff(clean_run[1], normalised(mongo_db)) == {}


@pytest.mark.parametrize("strategy", ["rewrite", "in_place"])
def test_round_trip_is_byte_exact_with_answers_up_to_64k(mongo_db, mongo_url, tmp_path, strategy):
    """Answers of 4 KiB and more come back from pymongo 4.18+ as memoryviews: the whole
    chain goes up and down over them, and every byte of every document comes back."""
    report = seed(mongo_db, **SMALL, seed=3)
    assert report.answers.longest >= 60 * 1024 and report.answers.long >= 2
    before = snapshot(mongo_db)
    answers = {d["_id"]: d["content"] for d in mongo_db.chat_messages.find({"role": "assistant"})}
    cli = Cli(tmp_path, mongo_url, write_strategy=strategy)
    r = cli.run("-v", "upgrade", "head")
    assert r.code == 0, r.err
    assert f"write strategy: {strategy}" in r.err
    assert {d["_id"]: d["content"] for d in mongo_db.chat_messages.find(
        {"role": "assistant"})} == answers
    r = cli.run("downgrade", "base")
    assert r.code == 0, r.err
    assert snapshot(mongo_db) == before


@REWRITE_ONLY
def test_schema_change_folded_into_the_link_pass_undoes_one_revision_at_a_time(mongo_db, cli):
    seed(mongo_db, **SMALL, seed=3)
    before = dump(mongo_db)
    r = cli.run("upgrade", SCHEMA)  # the schema revision alone writes its own change
    assert r.code == 0, r.err  # (with the backup's swap, folded into its pass)
    assert f"chat_messages: one pass writes the changes of {BACKUP}:1, {SCHEMA}:1\n" in r.err
    schema_alone = normalised(mongo_db)
    assert cli.run("downgrade", "base").code == 0
    r = cli.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "chat_messages: one pass writes the changes of" in r.err
    assert re.search(rf"^upgraded {SCHEMA} .*\n(    .*\n)*? +chat_messages changed: +[1-9]", r.out,
                     re.M)
    assert cli.run("downgrade", SCHEMA).code == 0  # the link revision's own record only
    assert DeepDiff(schema_alone, normalised(mongo_db)) == {}
    assert cli.run("downgrade", "base").code == 0
    assert DeepDiff(before, dump(mongo_db)) == {}


KILL_AFTER_INSERTS = """
import os, re, signal
from pymongo.collection import Collection
_insert, _rename, _seen = Collection.insert_many, Collection.rename, [0]
def insert_many(self, docs, *a, **kw):
    result = _insert(self, docs, *a, **kw)
    if re.fullmatch({pattern!r}, self.name):
        _seen[0] += 1
        if _seen[0] >= {count}:
            os.kill(os.getpid(), signal.SIGKILL)
    return result
def rename(self, new, **kw):
    if re.fullmatch({rename!r}, self.name) and not kw.get("dropTarget"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _rename(self, new, **kw)
Collection.insert_many, Collection.rename = insert_many, rename
"""

#: GridFS collections have dots in their names: backed up by a copy on every strategy
COPIED_ON_EVERY_STRATEGY = {"backup-copy-gridfs-files"}
KILL_POINTS = {
    # revision 1: its snapshots of messages and uploads are made by the next pass over
    # each (the original renamed, not copied); chat_sessions, which no later revision
    # touches, by a pass of its own when revision 2 ends: killed while copying it, between
    # its renames, and while copying fs.files
    "backup-copy": (rf"mongrate_tmp_{BACKUP}_1_chat_sessions", 1, "-", BACKUP),
    "backup-between-renames": ("-", 0, rf"mongrate_tmp_{BACKUP}_1_chat_sessions", BACKUP),
    "backup-copy-gridfs-files": (r"fs\.files_backup_\d+_\d+", 1, "-", BACKUP),
    # revision 3's pass over the messages built, before the original becomes the snapshot
    "backup-folded-before-renames": ("-", 0, "chat_messages", LINK),
    # revision 2: building uploads (call 2: its message change, call 1, waits for
    # revision 3's pass over chat_messages), then between the renames of uploads (the
    # original to its snapshot, the copy in)
    "schema-build": (rf"mongrate_tmp_{SCHEMA}_2_file_uploads", 1, "-", SCHEMA),
    "schema-swap": ("-", 0, rf"mongrate_tmp_{SCHEMA}_2_file_uploads", SCHEMA),
    # revision 3: building both new collections (messages with revision 2's change
    # written in the same pass), between the renames of the messages (the original to
    # its snapshot, the copy in), then between the two swaps
    "link-build": (rf"mongrate_tmp_{LINK}_1_file_uploads", 2, "-", LINK),
    "link-build-folded": (rf"mongrate_tmp_{LINK}_1_chat_messages", 3, "-", LINK),
    "link-swap-folded": ("-", 0, rf"mongrate_tmp_{LINK}_1_chat_messages", LINK),
    "link-between-swaps": ("-", 0, rf"mongrate_tmp_{LINK}_1_file_uploads", LINK),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_then_resumed_upgrade_equals_a_clean_run(mongo_db, cli, clean_run, point):
    if point not in COPIED_ON_EVERY_STRATEGY and not is_ferretdb_v1(mongo_db):
        pytest.skip("the kill point sits in the rewrite strategy's copy or swap; the probe "
                    "picks in_place on this server")
    pattern, count, rename, rev = KILL_POINTS[point]
    seed(mongo_db, **SMALL, seed=3)
    before = dump(mongo_db)
    prelude = KILL_AFTER_INSERTS.format(pattern=pattern, count=count, rename=rename)
    r = cli.run("upgrade", "head", prelude=prelude)
    assert r.code == -9, (r.code, r.err)
    started = mongo_db[CFG.log_collection].find_one({"revision": rev, "direction": "upgrade"})
    assert started and started["status"] == "started"  # killed inside that revision
    if rev == LINK:  # the schema revision waits for the pass that writes its change, the
        # backup for the one that keeps the original messages as their snapshot
        for held in (BACKUP, SCHEMA):
            log = mongo_db[CFG.log_collection].find_one({"revision": held})
            assert log["status"] == "started"
        assert heads(mongo_db) == []
    r = cli.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "resuming" in r.err
    assert heads(mongo_db) == [INDEXES]
    assert DeepDiff(clean_run[1], normalised(mongo_db)) == {}
    r = cli.run("downgrade", "base")
    assert r.code == 0, r.err
    assert DeepDiff(before, dump(mongo_db)) == {}


def test_backup_restore_after_corruption(mongo_db, cli):
    seed(mongo_db, **SMALL, seed=3)
    original = dump(mongo_db, ["chat_messages", "file_uploads", "chat_sessions"])
    assert cli.run("upgrade", "head").code == 0
    stamp = mongo_db[CFG.backups_collection].find_one({"source": "chat_messages"})["backup_id"]
    # a deliberate corruption on top of the migration
    victims = [d["_id"] for d in mongo_db.chat_messages.find({}, {"_id": 1}).limit(3)]
    mongo_db.chat_messages.update_many({"_id": {"$in": victims}}, {"$set": {"content": "???"}})
    mongo_db.file_uploads.delete_one({})
    mongo_db.chat_sessions.insert_one({"session_id": "intruder"})
    expected = {}
    for source in ("chat_messages", "file_uploads", "chat_sessions"):
        live = {repr(d["_id"]): d for d in mongo_db[source].find()}
        snap = {repr(d["_id"]): d for d in mongo_db[f"{source}_backup_{stamp}"].find()}
        expected[source] = sum(1 for k in live.keys() | snap.keys() if live.get(k) != snap.get(k))
    assert all(expected.values())

    r = cli.run("backup", "restore", stamp)
    assert r.code != 0 and "--yes" in r.err
    for source, n in expected.items():
        assert f"{source}: {n} differ" in r.err
    assert mongo_db.chat_messages.count_documents({"content": "???"}) == 3  # untouched

    r = cli.run("backup", "restore", stamp, "--yes")
    assert r.code == 0, r.err
    restored = dump(mongo_db, list(original))  # documents as before the migration
    assert DeepDiff({k: v["docs"] for k, v in original.items()},
                    {k: v["docs"] for k, v in restored.items()}) == {}


def test_dry_run_writes_nothing_and_says_what_it_would_do(mongo_db, cli):
    seed(mongo_db, **SMALL, seed=3)
    before = dump(mongo_db)
    r = cli.run("upgrade", "head", "--dry-run")
    assert r.code == 0, r.err
    assert "dry run: nothing was written" in r.out
    strategy = "rewrite" if is_ferretdb_v1(mongo_db) else "in_place"
    label = strategy.replace("_", "-")
    assert re.search(r"chat_messages: would change_each changes [1-9]\d* of \d+ matching "
                     rf"documents \({label}\)", r.err)
    assert f"write strategy: {strategy}" in r.err
    if strategy == "rewrite":  # the backup swaps the collection there; in_place copies it
        assert re.search(r"would rename chat_messages to chat_messages_backup_\d+_\d+ and "
                         r"the copy to chat_messages", r.err)
    assert DeepDiff(before, dump(mongo_db)) == {}
    assert heads(mongo_db) == []


def test_empty_database_round_trip(mongo_db, cli):
    """A deployment with no chat data yet: every revision runs, and nothing is left."""
    r = cli.run("upgrade", "head")
    assert r.code == 0, r.err
    assert "session_created" in mongo_db.chat_messages.index_information()
    r = cli.run("downgrade", "base")
    assert r.code == 0, r.err
    assert [n for n in mongo_db.list_collection_names() if not n.startswith("mongrate")] == []
