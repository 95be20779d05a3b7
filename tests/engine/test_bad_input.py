"""Bad input: one clear line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json

import pytest
from pymongo import MongoClient

from mongrate.runtime.store import client_options
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


def selection_timeout(url: str) -> float:
    """The seconds server selection waits for ``url`` with mongrate's options, as pymongo
    itself reads them (no connection made): what "fails fast" rests on, without a clock."""
    options, _ = client_options(url)
    client = MongoClient(url, connect=False, **options)
    try:
        return client.options.server_selection_timeout
    finally:
        client.close()


def test_unreachable_server_fails_fast(project):
    project.add("aaaa1111", None)
    url = f"mongodb://127.0.0.1:{free_port()}/x"
    assert selection_timeout(url) == 5.0  # not pymongo's own 30 s
    r = project.run("--url", url, "upgrade", "head")
    assert r.code == 2 and "cannot reach" in r.err and "Traceback" not in r.err
    assert "within 5s" in r.err


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


# ---------------------------------------------------------------- revision ids (issue 9, item 5)
@pytest.mark.parametrize("rev_id", ["base", "head", "heads", "current", "ab@cd", "ab-1", "cd+1",
                                    "a:b", "a b", "a,b"])
def test_revision_ids_that_read_as_targets_are_refused(project, mongo_db, rev_id):
    project.add("aaaa1111", None)
    (project.versions / "bbbb_bad.py").write_text(
        f"revision = {rev_id!r}\ndown_revision = 'aaaa1111'\n"
        "def upgrade(op):\n    pass\n\n\ndef downgrade(op):\n    pass\n")
    for args in (("history",), ("upgrade", "head")):
        r = project.run(*args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert "bbbb_bad.py" in r.err and f"revision id {rev_id!r} cannot be used" in r.err
    assert no_writes(mongo_db) == []


@pytest.mark.parametrize("rev_id", ["base", "head", "current", "ab-1", "a:b", "x@y", "a b"])
def test_revision_command_refuses_such_ids(project, rev_id):
    r = project.run("revision", "-m", "x", "--rev-id", rev_id)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert f"--rev-id {rev_id!r} cannot be used" in r.err
    assert list(project.versions.iterdir()) == []


# ---------------------------------------------------------------- messages (issue 9, item 6)
@pytest.mark.parametrize("message", [
    "move files from C:\\Users\\bob",
    "broken \\N{x} escape",
    'say "hi" and end with a quote"',
    'triple """ and \'\'\' quotes',
    "Unicode: ünïcödé 漢字 🎉",
    "control \x00 \x07 \r characters",
    "x" * 3000,
    "ends with a backslash \\",
])
def test_any_message_makes_a_valid_revision_file(project, mongo_db, message):
    r = project.run("revision", "-m", message, "--rev-id", "aaaa1111")
    assert r.code == 0, r.err
    (path,) = project.versions.glob("aaaa1111_*.py")
    r = project.run("--json", "history")
    assert r.code == 0, r.err
    shown = json.loads(r.out)[0]["message"]
    assert shown == message.splitlines()[0].strip()
    assert project.run("revision", "-m", message, "--rev-id", "bbbb2222").code == 0
    assert project.run("upgrade", "head").code == 0
    assert mongo_db.mongrate_version.distinct("_id") == ["bbbb2222"]


def test_a_template_that_breaks_the_file_writes_nothing(project):
    (project.versions / "script.py.tmpl").write_text("revision = ${revision_repr}\n# ${message}\n")
    r = project.run("revision", "-m", "two\nlines", "--rev-id", "aaaa1111")
    assert r.code == 2 and "would not load, so it was not written" in r.err
    assert "script.py.tmpl" in r.err
    assert not list(project.versions.glob("*.py"))


# ---------------------------------------------------------------- configuration (issue 9, item 7)
@pytest.mark.parametrize("settings, key", [
    ({"version_collection": ""}, "version_collection"),
    ({"log_collection": "bad$name"}, "log_collection"),
    ({"lock_collection": "system.locks"}, "lock_collection"),
    ({"undo_collection": "a..b"}, "undo_collection"),
    ({"version_collection": "mongrate_log"}, "'version_collection' and 'log_collection'"),
    ({"backups_collection": "shared", "undo_collection": "shared"}, "'backups_collection'"),
])
def test_bad_collection_names_name_the_key(project, mongo_db, settings, key):
    project.add("aaaa1111", None)
    project.write_ini(**settings)
    for args in (("upgrade", "head"), ("current",), ("stamp", "aaaa1111")):
        r = project.run(*args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert key in r.err and "mongrate.ini" in r.err and "unexpected" not in r.err
    assert no_writes(mongo_db) == []


@pytest.mark.parametrize("template", ["../../x_%(rev)s", "sub/%(rev)s", "_%(rev)s",
                                      ".%(rev)s", "%(slug)s/.."])
def test_file_template_must_name_a_file_in_versions(project, tmp_path, template):
    project.write_ini(file_template=template.replace("%", "%%"))
    r = project.run("revision", "-m", "hello", "--rev-id", "aaaa1111")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "file_template" in r.err
    assert not [p for p in tmp_path.rglob("*aaaa1111*")]


def test_url_options_are_honoured(project):
    project.add("aaaa1111", None)
    url = f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=300"
    assert selection_timeout(url) == 0.3  # our own default would wait 5 s
    r = project.run("--url", url, "current")
    assert r.code == 2 and "within 0.3s" in r.err
    r = project.run("--url", url.replace("=300", "=soon"), "current")
    assert r.code == 2 and "serverSelectionTimeoutMS must be a number" in r.err


# ---------------------------------------------------------------- command line (issue 9, item 8)
@pytest.mark.parametrize("value", ["nan", "-1", "inf", "-0.5", "soon"])
def test_lock_timeout_must_be_finite_and_not_negative(project, mongo_db, value):
    project.add("aaaa1111", None)
    for args in (("upgrade", "head"), ("downgrade", "base"), ("stamp", "aaaa1111")):
        r = project.run(*args, "--lock-timeout", value)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert "--lock-timeout" in r.err
    assert no_writes(mongo_db) == []


def test_wrong_way_relative_steps_are_errors(project, mongo_db):
    project.add("aaaa1111", None)
    project.add("bbbb2222", "aaaa1111")
    assert project.run("upgrade", "aaaa1111").code == 0
    r = project.run("upgrade", "-1")
    assert r.code == 2 and "would go down: use 'downgrade -1'" in r.err
    r = project.run("downgrade", "+1")
    assert r.code == 2 and "would go up: use 'upgrade +1'" in r.err
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]


def test_unknown_options_are_not_targets(project, mongo_db):
    project.add("aaaa1111", None)
    for args in (("upgrade", "--bogus"), ("downgrade", "-1", "--bogus"), ("stamp", "-x"),
                 ("upgrade", "-z")):
        r = project.run(*args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert "No such option" in r.err and "--help" in r.err
    assert no_writes(mongo_db) == []


def test_verbose_after_the_command(project, mongo_db):
    project.add("aaaa1111", None)
    project.add("bbbb2222", "aaaa1111", body_up='raise RuntimeError("boom")')
    r = project.run("upgrade", "aaaa1111", "-v")
    assert r.code == 0, r.err
    assert mongo_db.mongrate_version.distinct("_id") == ["aaaa1111"]
    r = project.run("downgrade", "-1", "--verbose")
    assert r.code == 0, r.err
    r = project.run("upgrade", "head", "-v")  # -v after the command still shows the traceback
    assert r.code == 1 and "Traceback" in r.err and "boom" in r.err
    for args in (("stamp", "aaaa1111", "-v"), ("current", "-v"), ("check", "-v"), ("heads", "-v")):
        assert "No such option" not in project.run(*args).err


@pytest.mark.parametrize(("url", "shown"), [
    ("mongodb://u:secret@h:1,h2:2/db?authSource=admin", "mongodb://u:***@h:1,h2:2/db?authSource=admin"),
    ("mongodb+srv://u:p%2Fq@cluster.example/", "mongodb+srv://u:***@cluster.example/"),
    ("mongodb://u@h/db", "mongodb://u@h/db"),
    ("mongodb://h:27017", "mongodb://h:27017"),
])
def test_one_redact_hides_only_the_password(url, shown):
    from app_patch.tools import deploy
    from mongrate.config import redact

    assert redact(url) == shown
    assert deploy.redact is redact  # the deploy tool says URLs the same way


# ------------------------------------------------------- database names (issue 15)
BAD_DATABASE_NAMES = [
    ("bad.name$x", "'.'"),
    ("bad$name", "'$'"),
    ("two words", "a space"),
    ('quo"te', "'\"'"),
    ("back\\slash", "'\\\\'"),
    ("x" * 64, "at most 63"),
]


@pytest.mark.parametrize("name, problem", BAD_DATABASE_NAMES)
def test_bad_database_name_in_the_url_is_one_line_exit_2(project, mongo_client,
                                                         mongo_server_url, name, problem):
    project.add("aaaa1111", None)
    url = mongo_server_url.rstrip("/") + "/" + name
    before = sorted(mongo_client.list_database_names())
    for args in (("--url", url, "current"), ("--url", url, "upgrade", "head"),
                 ("--url", url, "stamp", "aaaa1111"), ("--url", url, "check")):
        r = project.run(*args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert repr(name) in r.err and problem in r.err, r.err
        assert "unexpected" not in r.err and "Traceback" not in r.err
    project.write_ini(url=url)
    r = project.run("upgrade", "head")
    assert r.code == 2 and repr(name) in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert sorted(mongo_client.list_database_names()) == before


@pytest.mark.parametrize("name, problem", BAD_DATABASE_NAMES[1:])
def test_bad_database_name_in_the_config_names_the_key(project, mongo_client, mongo_server_url,
                                                       name, problem):
    project.add("aaaa1111", None)
    project.write_ini(url=mongo_server_url, database=name)
    before = sorted(mongo_client.list_database_names())
    for args in (("upgrade", "head"), ("current",), ("downgrade", "base")):
        r = project.run(*args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert "'database'" in r.err and repr(name) in r.err and problem in r.err, r.err
    assert sorted(mongo_client.list_database_names()) == before


def test_init_refuses_a_bad_database_name(tmp_path, project):
    r = project.run("init", str(tmp_path / "new"), "--database", "no.dots")
    assert r.code == 2 and "'no.dots'" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "new" / "mongrate.ini").exists()
