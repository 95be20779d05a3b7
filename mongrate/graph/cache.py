"""An on-disk cache of revision metadata, so ``history`` and ``heads`` parse no file that
has not changed since the last command.

An entry is keyed by the file's name and its stat: size, mtime_ns, ctime_ns and inode.
ctime cannot be set from user space, so restoring an mtime (``touch -d``, ``cp -p``)
still misses; a rename or replace gives a new name or inode. What stat cannot see is an
edit within one tick of the file system's clock that keeps the size (the "racy" case git
knows): an entry made while its file was that recent also holds the content's hash, and
is trusted only after the hash is checked again (then it is marked settled). A cache that
cannot be read or written is ignored: it only ever saves work.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from mongrate.graph.revisions import Revision

_FORMAT = 1
#: a file modified less than this long before its entry was made may still change
#: without its stat changing (coarse timestamps, clocks a tick apart)
RACY_NS = 2_000_000_000


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _encode(rev: Revision) -> list:
    return [rev.revision, list(rev.down_revisions), list(rev.depends_on),
            sorted(rev.branch_labels), rev.message, rev.create_date]


def _decode(row: list, path: Path) -> Revision:
    rev, down, deps, labels, message, created = row
    return Revision(revision=rev, down_revisions=tuple(down), depends_on=tuple(deps),
                    branch_labels=frozenset(labels), message=message, path=str(path),
                    create_date=created)


def cache_root() -> Path:
    """The user's cache folder for graph metadata (``$XDG_CACHE_HOME/mongrate/graph``):
    outside the project, so no command leaves a file in a directory it was run in."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mongrate" / "graph"


def cache_file(folder: Path) -> Path:
    """Where the cache of the revisions ``folder`` lives: one file per folder, named by a
    hash of its resolved path."""
    tag = hashlib.blake2b(str(folder.resolve()).encode(), digest_size=6).hexdigest()
    return cache_root() / f"graph-cache-{tag}.json"


class MetadataCache:
    """Revision metadata of one folder's files, read through the cache file."""

    def __init__(self, location: Path):
        self.location = location
        self._entries: dict[str, list] = {}
        self._dirty = False
        try:
            data = json.loads(location.read_bytes())
            if (isinstance(data, dict) and data.get("format") == _FORMAT
                    and isinstance(data.get("entries"), dict)):
                self._entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: parse everything, write a fresh one

    def read_all(self, paths: list[Path],
                 parse: Callable[[Path, bytes | None], Revision]) -> list[Revision]:
        """Every file's Revision, parsing only the ones whose entry does not match. The
        cache keeps exactly these files (removed or renamed ones drop out)."""
        fresh: dict[str, list] = {}
        out = []
        for path in paths:
            name = path.name
            try:
                st = os.stat(path)
            except OSError:
                out.append(parse(path, None))  # let the parser say what is wrong with it
                continue
            key = _stat_key(st)
            entry = self._entries.get(name)
            try:
                rev, entry = self._lookup(entry, key, path, st)
            except (TypeError, ValueError, IndexError):  # a damaged entry: parse again
                rev, entry = None, None
            if rev is None:
                # stat, then read, then parse those bytes: an edit after the stat shows
                # up as a new stat or (racy) a new hash next time
                data = _read(path)
                rev = parse(path, data)
                if data is None:
                    out.append(rev)
                    continue
                entry = [key, _digest(data) if self._racy(st) else None, _encode(rev)]
                self._dirty = True
            fresh[name] = entry
            out.append(rev)
        if fresh.keys() != self._entries.keys():
            self._dirty = True
        self._entries = fresh
        return out

    def _lookup(self, entry: list | None, key: list[int], path: Path, st: os.stat_result,
                ) -> tuple[Revision | None, list | None]:
        """The cached Revision if ``entry`` still describes the file, and the entry to keep."""
        if entry is None or entry[0] != key:
            return None, None
        digest = entry[1]
        if digest is not None:  # racy when cached: check the content again
            data = _read(path)
            if data is None or _digest(data) != digest:
                return None, None
            if not self._racy(st):
                entry = [key, None, entry[2]]
                self._dirty = True
        return _decode(entry[2], path), entry

    @staticmethod
    def _racy(st: os.stat_result) -> bool:
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        return time.time_ns() - newest < RACY_NS

    def save(self) -> None:
        """Write the cache if anything changed; never fails (a read-only project simply
        runs uncached)."""
        if not self._dirty:
            return
        tmp = self.location.with_name(f"{self.location.name}.{os.getpid()}.tmp")
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"format": _FORMAT, "entries": self._entries},
                                      separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.location)  # readers see the old file or the new, whole
            self._dirty = False
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
