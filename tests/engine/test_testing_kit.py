"""The authors' testing kit: the built-in tests switched on through the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mongrate.testing.kit import Harness
from mongrate.testing.plugin import URL_SERVER

REV = '''"""{msg}

Revision ID: {rev}
"""
revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade(op):
    {up}


def downgrade(op):
    {down_body}
'''


def write_project(path, url, *, bad_downgrade: bool) -> None:
    (path / "versions").mkdir()
    (path / "tests").mkdir()
    (path / "mongrate.ini").write_text(f"[mongrate]\nurl = {url}\nscript_location = versions\n")
    (path / "versions" / "a1_a.py").write_text(REV.format(
        msg="add x", rev="a1", down=None, down_body="op.restore_undo()",
        up='op.update_many("items", {}, {"$set": {"x": 1}, "$unset": {"gone": ""}})'))
    (path / "versions" / "b2_b.py").write_text(REV.format(
        msg="extra doc", rev="b2", down="a1", up='op.db.items.insert_one({"_id": "extra"})',
        down_body="pass" if bad_downgrade else 'op.db.items.delete_one({"_id": "extra"})'))
    (path / "tests" / "conftest.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture
        def mongrate_seed():
            return lambda db: db.items.insert_many([{"_id": i, "gone": i} for i in range(5)])
    """))


def run_pytest(path, server: str):
    """The project's own pytest run, on the same kind of server as this test."""
    choice = [] if server == URL_SERVER else ["--mongrate-server", server]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--mongrate-tests", *choice, "tests"], cwd=path,
                          capture_output=True, text=True, timeout=300)


def test_builtin_tests_pass_on_sound_revisions_and_catch_a_bad_downgrade(
        tmp_path, mongo_url, mongo_server):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    write_project(good, mongo_url, bad_downgrade=False)
    r = run_pytest(good, mongo_server)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout
    write_project(bad, mongo_url, bad_downgrade=True)
    r = run_pytest(bad, mongo_server)
    assert r.returncode == 1
    assert "test_stairway" in r.stdout and "downgrading b2 did not restore" in r.stdout
    assert "2 passed" in r.stdout


def test_harness_single_head_names_the_heads(tmp_path, mongo_url):
    write_project(tmp_path, mongo_url, bad_downgrade=False)
    (tmp_path / "versions" / "c3_c.py").write_text(REV.format(
        msg="branch", rev="c3", down="a1", up="pass", down_body="pass"))
    harness = Harness(mongo_url, tmp_path / "mongrate.ini")
    try:
        try:
            harness.single_head()
        except AssertionError as exc:
            assert "found 2: b2, c3" in str(exc)
        else:
            raise AssertionError("two heads went unnoticed")
    finally:
        harness.close()
