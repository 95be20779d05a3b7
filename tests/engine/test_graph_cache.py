"""The on-disk revision metadata cache never answers from a stale entry (files only, no
database): edits, additions, removals and renames between commands, an edit that keeps
size and mtime, and a cache that cannot be read or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mongrate import commands
from mongrate.config import load_config
from mongrate.graph import cache as graph_cache
from mongrate.graph.scripts import ScriptDirectory


def write_rev(folder: Path, rid: str, down: str | None, message: str, name: str | None = None
              ) -> Path:
    path = folder / (name or f"{rid}_step.py")
    path.write_text(f'"""{message}\n\nRevision ID: {rid}\n"""\nrevision = {rid!r}\n'
                    f"down_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
                    "def upgrade(op):\n    pass\n\n\ndef downgrade(op):\n    pass\n")
    return path


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "versions").mkdir()
    (tmp_path / "mongrate.ini").write_text(
        "[mongrate]\nurl = mongodb://127.0.0.1:1/unused\nscript_location = versions\n")
    write_rev(tmp_path / "versions", "aaaa01", None, "first")
    write_rev(tmp_path / "versions", "bbbb02", "aaaa01", "second")
    write_rev(tmp_path / "versions", "cccc03", "bbbb02", "third")
    return tmp_path


def graph_of(root: Path):
    """What a new command sees: a fresh ScriptDirectory (cache read from disk)."""
    return ScriptDirectory(load_config(str(root / "mongrate.ini"))).graph


def heads(root: Path) -> list[str]:
    config = load_config(str(root / "mongrate.ini"))
    return [r.revision for r in commands.heads(config)]


def cached_names(root: Path) -> set[str]:
    files = list((root / "cache" / "mongrate" / "graph").glob("graph-cache-*.json"))
    assert len(files) == 1
    import json

    return set(json.loads(files[0].read_text())["entries"])


def test_edits_additions_removals_and_renames_between_calls(project_dir: Path) -> None:
    versions = project_dir / "versions"
    assert heads(project_dir) == ["cccc03"]
    assert cached_names(project_dir) == {"aaaa01_step.py", "bbbb02_step.py", "cccc03_step.py"}

    # edit: a new message (different size)
    write_rev(versions, "bbbb02", "aaaa01", "second, reworded")
    assert graph_of(project_dir).get("bbbb02").message == "second, reworded"

    # add a revision on top
    write_rev(versions, "dddd04", "cccc03", "fourth")
    assert heads(project_dir) == ["dddd04"]

    # remove it again
    (versions / "dddd04_step.py").unlink()
    assert heads(project_dir) == ["cccc03"]
    assert "dddd04_step.py" not in cached_names(project_dir)

    # rename a file: same revision, its new path
    (versions / "cccc03_step.py").rename(versions / "cccc03_renamed.py")
    g = graph_of(project_dir)
    assert g.get("cccc03").path == str(versions / "cccc03_renamed.py")
    assert cached_names(project_dir) == {"aaaa01_step.py", "bbbb02_step.py",
                                         "cccc03_renamed.py"}

    # rename one revision's file onto another's name (same size): the other's content now
    write_rev(versions, "eeee05", "cccc03", "fifth")
    assert heads(project_dir) == ["eeee05"]
    (versions / "cccc03_renamed.py").unlink()
    (versions / "eeee05_step.py").rename(versions / "cccc03_renamed.py")
    with pytest.raises(Exception, match="cccc03"):
        graph_of(project_dir)  # eeee05 now revises a revision no file defines


def test_edit_keeping_size_and_mtime_is_seen(project_dir: Path) -> None:
    """Same size, mtime put back as it was: only ctime (or the content) tells."""
    path = project_dir / "versions" / "cccc03_step.py"
    assert graph_of(project_dir).get("cccc03").down_revisions == ("bbbb02",)
    st = os.stat(path)
    text = path.read_text()
    path.write_text(text.replace("down_revision = 'bbbb02'", "down_revision = 'aaaa01'"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert graph_of(project_dir).get("cccc03").down_revisions == ("aaaa01",)


def test_coarse_clock_edit_within_the_same_tick_is_seen(project_dir: Path, monkeypatch) -> None:
    """A file system whose stat cannot tell two writes in one second apart (1 s mtime,
    no ctime or inode change): an entry made within the racy window is checked against
    the content, so the edit is still seen."""
    monkeypatch.setattr(graph_cache, "_stat_key",
                        lambda st: [st.st_size, st.st_mtime_ns // 10**9 * 10**9])
    path = project_dir / "versions" / "cccc03_step.py"
    st = os.stat(path)
    assert graph_of(project_dir).get("cccc03").message == "third"
    path.write_text(path.read_text().replace("third", "THIRD"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert graph_of(project_dir).get("cccc03").message == "THIRD"
    # and once the file has aged past the window, its entry settles: no more reads
    monkeypatch.setattr(graph_cache, "RACY_NS", 0)
    assert graph_of(project_dir).get("cccc03").message == "THIRD"
    reads = []
    real_read = graph_cache._read
    monkeypatch.setattr(graph_cache, "_read", lambda p: reads.append(p) or real_read(p))
    assert graph_of(project_dir).get("cccc03").message == "THIRD"
    assert reads == []


def test_unwritable_or_corrupt_cache_is_never_fatal(project_dir: Path) -> None:
    folder = project_dir / "cache" / "mongrate" / "graph"
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")  # mkdir fails
    assert heads(project_dir) == ["cccc03"]
    folder.unlink()
    assert heads(project_dir) == ["cccc03"]
    [cache] = folder.glob("graph-cache-*.json")
    cache.write_text('{"format": 1, "entries": {"cccc03_step.py": [1, 2, 3]}}')
    assert heads(project_dir) == ["cccc03"]
    cache.write_bytes(b"\x00garbage")
    assert heads(project_dir) == ["cccc03"]
    assert graph_of(project_dir).get("cccc03").message == "third"


def test_cache_is_used(project_dir: Path, monkeypatch) -> None:
    """A warm call parses nothing."""
    graph_of(project_dir)
    import mongrate.graph.scripts as scripts

    parsed = []
    real = scripts.read_revision
    monkeypatch.setattr(scripts, "read_revision", lambda p, s=None: parsed.append(p) or real(p, s))
    monkeypatch.setattr(graph_cache, "RACY_NS", 0)
    graph_of(project_dir)  # settles the racy entries (content checked, not parsed)
    graph_of(project_dir)
    assert parsed == []


@pytest.mark.parametrize("verb", [["heads"], ["branches"], ["show", "cccc03"], ["history"]])
def test_graph_verbs_read_each_file_once_and_load_no_driver(project_dir: Path, verb) -> None:
    """`heads` had slowed to half its speed: it read every file twice (two
    ScriptDirectory objects) and imported pymongo and the engine with the commands
    package. Cold cache: one parse per file, and no pymongo in the process."""
    import subprocess
    import sys

    code = (
        "import sys, mongrate.graph.scripts as s\n"
        "n = []\nreal = s.read_revision\n"
        "s.read_revision = lambda p, b=None: n.append(p) or real(p, b)\n"
        "from mongrate.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('parsed', len(n), 'pymongo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, *verb], cwd=project_dir,
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "parsed 3 False"
