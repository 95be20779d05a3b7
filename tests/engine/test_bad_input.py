"""Bad input: one clear line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import time

import pytest

from mongrate.testing import free_port


def no_writes(db):
    return [n for n in db.list_collection_names()]


def test_syntax_error_names_file_and_line(project, mongo_db):
    project.add("aaaa1111", None)
    (project.versions / "bbbb2222_bad.py").write_text(
        'revision = "bbbb2222"\ndown_revision = "aaaa1111"\ndef upgrade(op)\n    pass\n')
    r = project.run("upgrade", "head")
    assert r.code == 2
    assert "bbbb2222_bad.py:3" in r.err and "syntax error" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert no_writes(mongo_db) == []


def test_missing_upgrade_function(project, mongo_db):
    (project.versions / "cccc_x.py").write_text(
        'revision = "cccc3333"\ndown_revision = None\ndef downgrade(op):\n    pass\n')
    r = project.run("history")
    assert r.code == 2 and "defines no upgrade(op)" in r.err and "cccc_x.py" in r.err
    assert project.run("upgrade", "head").code == 2
    assert no_writes(mongo_db) == []


@pytest.mark.parametrize("spec, message", [
    ("nope", "nope"),
    ("ab", "4"),
])
def test_unknown_or_short_target(project, mongo_db, spec, message):
    project.add("aaaa1111", None)
    r = project.run("upgrade", spec)
    assert r.code == 2 and message in r.err and "Traceback" not in r.err
    assert "mongrate_version" not in mongo_db.list_collection_names()


def test_ambiguous_prefix_lists_candidates(project):
    project.add("abcd1111", None)
    project.add("abcd2222", "abcd1111")
    r = project.run("upgrade", "abcd")
    assert r.code == 2 and "abcd1111" in r.err and "abcd2222" in r.err


def test_dangling_down_revision_names_file(project):
    project.add("aaaa1111", "ffff9999")
    r = project.run("heads")
    assert r.code == 2 and "aaaa1111_r.py" in r.err and "ffff9999" in r.err


def test_cycle_names_revisions(project):
    project.add("aaaa1111", "bbbb2222")
    project.add("bbbb2222", "aaaa1111")
    r = project.run("history")
    assert r.code == 2 and "cycle" in r.err.lower() and "aaaa1111" in r.err


def test_missing_and_broken_config(project, tmp_path):
    r = project.run("-c", str(tmp_path / "absent.ini"), "current")
    assert r.code == 2 and "not found" in r.err
    bad = tmp_path / "bad.ini"
    bad.write_text("[other]\nx = 1\n")
    r = project.run("-c", str(bad), "current")
    assert r.code == 2 and "[mongrate]" in r.err
    bad.write_text("[mongrate]\nurl = ${MONGRATE_TEST_SURELY_UNSET}\n")
    r = project.run("-c", str(bad), "current")
    assert r.code == 2 and "MONGRATE_TEST_SURELY_UNSET" in r.err
    bad.write_text("[mongrate\nurl")
    r = project.run("-c", str(bad), "current")
    assert r.code == 2 and "cannot parse" in r.err
    bad.write_text("[mongrate]\nurl = mongodb://127.0.0.1:1/x\nlock_lease_seconds = soon\n")
    r = project.run("-c", str(bad), "current")
    assert r.code == 2 and "lock_lease_seconds" in r.err


def test_unreachable_server_fails_fast(project):
    project.add("aaaa1111", None)
    start = time.monotonic()
    r = project.run("--url", f"mongodb://127.0.0.1:{free_port()}/x", "upgrade", "head")
    assert time.monotonic() - start < 8
    assert r.code == 2 and "cannot reach" in r.err and "Traceback" not in r.err


def test_wrong_credentials(project, mongo_server_url):
    """FerretDB (SQLite) accepts any credentials, so this needs a server that checks them."""
    project.add("aaaa1111", None)
    host = mongo_server_url.split("://", 1)[1].rstrip("/")
    r = project.run("--url", f"mongodb://nobody:wrong@{host}/x?authMechanism=PLAIN", "current")
    if r.code == 0:
        pytest.skip("this server does not check credentials (FerretDB's SQLite backend)")
    assert r.code == 2 and ("credentials" in r.err or "refused" in r.err or "error" in r.err)
    assert "wrong" not in r.err  # the password is never printed


@pytest.mark.parametrize("args", [
    ("upgrade", "nosuchrev"), ("downgrade", "nosuch"), ("downgrade", "-1"),
    ("stamp", "nosuch"), ("upgrade", "head"),
])
def test_bad_targets_write_nothing_at_all(project, mongo_db, args):
    project.add("aaaa1111", None)
    project.add("bbbb2222", "aaaa1111")
    project.add("cccc3333", "aaaa1111")  # two heads: 'upgrade head' is an error
    r = project.run(*args)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert mongo_db.list_collection_names() == []


def test_bad_lease_setting_is_a_config_error(project, mongo_db):
    project.write_ini(lock_lease_seconds="nan")
    r = project.run("upgrade", "head")
    assert r.code == 2 and "lock_lease_seconds" in r.err
    assert mongo_db.list_collection_names() == []


def test_unknown_setting_is_warned_about(project):
    project.add("aaaa1111", None)
    project.write_ini(lock_lease_second="5")
    r = project.run("heads")
    assert r.code == 0 and "unknown setting(s) lock_lease_second" in r.err


def test_unknown_backup_is_a_usage_error(project):
    r = project.run("backup", "restore", "20990101_000000")
    assert r.code == 2 and "no backup" in r.err
