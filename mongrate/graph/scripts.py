"""The versions/ folder: read revision files, checksum them, write new ones.

Revision metadata is read with ``ast`` (literals only) rather than by importing, so
``history`` and ``heads`` run no revision code and stay fast on thousands of files;
a module is imported only when its upgrade or downgrade is about to run.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import string
import sys
import threading
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from mongrate.config import Config
from mongrate.errors import ConfigError, MongrateError, ScriptError
from mongrate.graph.cache import MetadataCache, cache_file
from mongrate.graph.revisions import Revision, RevisionGraph, revision_id_problem

_TEMPLATE_NAME = "script.py.tmpl"
_REV_ID_RE = re.compile(r"^[A-Za-z0-9_]+$")


def _as_tuple(value: object, name: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ScriptError(f"{path}: '{name}' must be a string, a tuple of strings or None")


def read_revision(path: Path, source: bytes | None = None) -> Revision:
    """Parse one revision file's metadata without running it (``source``: its bytes,
    when already read)."""
    try:
        if source is None:
            source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ScriptError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again"
        ) from None
    except (OSError, ValueError) as exc:
        raise ScriptError(f"{path}: cannot read: {exc}") from None
    values: dict[str, object] = {}
    functions: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in (
                    "revision", "down_revision", "branch_labels", "depends_on"
                ):
                    try:
                        values[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        raise ScriptError(
                            f"{path}:{node.lineno}: '{target.id}' must be a literal "
                            "(a string, tuple of strings or None)"
                        ) from None
    rev = values.get("revision")
    if not isinstance(rev, str) or not rev:
        raise ScriptError(f"{path}: no 'revision = \"...\"' line; is this a revision file?")
    for needed in ("upgrade", "downgrade"):
        if needed not in functions:
            raise ScriptError(f"{path}: revision {rev} defines no {needed}(op) function")
    if "down_revision" not in values:
        raise ScriptError(f"{path}: revision {rev} has no 'down_revision' (use None for a base)")
    doc = ast.get_docstring(tree) or ""
    # the template's line comes after the message, which may itself contain such a line
    dates = re.findall(r"^Create Date:\s*(.+)$", doc, re.MULTILINE)
    create_date = dates[-1].strip() if dates else None
    return Revision(
        revision=rev,
        down_revisions=_as_tuple(values.get("down_revision"), "down_revision", path),
        depends_on=_as_tuple(values.get("depends_on"), "depends_on", path),
        branch_labels=frozenset(_as_tuple(values.get("branch_labels"), "branch_labels", path)),
        message=doc.strip().splitlines()[0].strip() if doc.strip() else "",
        path=str(path),
        create_date=create_date,
    )


def docstring_body(message: str) -> str:
    """``message`` escaped for the inside of a triple-double-quoted docstring, so the file's
    docstring reads back as exactly this text whatever it holds (backslashes, quotes,
    control characters; bytes the terminal could not decode become U+FFFD)."""
    try:
        raw = message.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no decoder produced
        raw = message.encode("utf-8", "replace")
    message = raw.decode("utf-8", "replace")
    out = []
    for ch in message:
        if ch in ('\\', '"'):
            out.append("\\" + ch)
        elif ch != "\n" and unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def checksum(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ScriptDirectory:
    """The revision files of one project."""

    def __init__(self, config: Config):
        self.config = config
        self.path = Path(config.script_location)
        self._graph: RevisionGraph | None = None
        self._modules: dict[str, ModuleType] = {}
        self._loading = threading.Lock()  # fleet commands run several databases at once

    def revision_files(self) -> list[Path]:
        if not self.path.is_dir():
            raise ConfigError(
                f"script_location {self.path} is not a directory: run 'mongrate init' "
                "or fix script_location in the config"
            )
        # names sorted as strings: Path objects compare part by part, slowly, on 2,000 files
        names = sorted(n for n in os.listdir(self.path)
                       if n.endswith(".py") and not n.startswith(("_", ".")))
        return [self.path / n for n in names]

    @property
    def graph(self) -> RevisionGraph:
        if self._graph is None:
            cache = MetadataCache(cache_file(self.path))
            revisions = cache.read_all(self.revision_files(), read_revision)
            self._graph = RevisionGraph(revisions)
            cache.save()  # only a graph that loaded: a broken file stays uncached
        return self._graph

    def load_module(self, rev_id: str) -> ModuleType:
        """Import the revision's module (once per process)."""
        with self._loading:
            return self._load_module(rev_id)

    def _load_module(self, rev_id: str) -> ModuleType:
        if rev_id in self._modules:
            return self._modules[rev_id]
        rev = self.graph.get(rev_id)
        for extra in reversed(self.config.prepend_sys_path):
            if str(extra) not in sys.path:
                sys.path.insert(0, str(extra))
        name = f"mongrate_revision_{rev_id}"
        spec = importlib.util.spec_from_file_location(name, rev.path)
        if spec is None or spec.loader is None:
            raise ScriptError(f"{rev.path}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a revision's import-time error is the user's to fix
            raise ScriptError(f"{rev.path}: import failed: {type(exc).__name__}: {exc}") from exc
        for fn in ("upgrade", "downgrade"):
            if not callable(getattr(module, fn, None)):
                raise ScriptError(f"{rev.path}: {fn} is not a function")
        self._modules[rev_id] = module
        return module

    def _template_path(self) -> Path:
        local = self.path / _TEMPLATE_NAME
        return local if local.exists() else Path(__file__).parent / "templates" / _TEMPLATE_NAME

    def template(self) -> string.Template:
        return string.Template(self._template_path().read_text(encoding="utf-8"))

    def write_revision(self, message: str, **kwargs: Any) -> Path:
        """Write a new revision file from the template and return its path (arguments as
        :meth:`render_revision`). The file is read back with the others before this
        returns: one that would not load is removed again."""
        path, text = self.render_revision(message, **kwargs)
        return self.write_file(path, text, kwargs.get("rev_id"))

    def write_file(self, path: Path, text: str, rev_id: str | None = None) -> Path:
        """Write a rendered revision; read it back with the others first thing: one that
        would not load is removed again (ScriptError)."""
        path.write_text(text, encoding="utf-8")
        try:
            written = read_revision(path)
            if rev_id is not None and written.revision != rev_id:
                raise ScriptError(f"its revision is {written.revision!r}, not {rev_id!r}")
            RevisionGraph([*self.graph, written])
        except MongrateError as exc:
            path.unlink()
            raise ScriptError(
                f"the new revision would not load, so it was not written: {exc}; "
                f"check the template ({self._template_path()}) and the options"
            ) from None
        self._graph = None
        return path

    def render_revision(
        self,
        message: str,
        *,
        down_revisions: tuple[str, ...],
        rev_id: str | None = None,
        branch_labels: tuple[str, ...] = (),
        depends_on: tuple[str, ...] = (),
        now: datetime | None = None,
        upgrades: str = "pass",
        downgrades: str = "op.restore_undo()",
        imports: str = "",
    ) -> tuple[Path, str]:
        """The path and text of a new revision file. ``upgrades``/``downgrades``: the
        functions' bodies (lines after the first indented by 4); ``imports``: lines put
        after the docstring."""
        rev_id = rev_id or uuid.uuid4().hex[:12]
        problem = revision_id_problem(rev_id)
        if problem or not _REV_ID_RE.match(rev_id):
            raise ConfigError(f"--rev-id {rev_id!r} cannot be used: "
                              f"{problem or 'it has characters other than letters, digits and _'}"
                              "; use letters, digits and '_'")
        if rev_id in self.graph:
            raise ConfigError(f"revision id {rev_id} already exists ({self.graph.get(rev_id).path})")
        now = now or datetime.now(UTC).replace(tzinfo=None)
        slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "revision"
        path = self.path / f"{self._file_stem(rev_id, slug, now)}.py"

        def rep(values: tuple[str, ...]) -> str:
            if not values:
                return "None"
            return repr(values[0]) if len(values) == 1 else repr(tuple(values))

        template = self.template()
        if (upgrades, downgrades) != ("pass", "op.restore_undo()") and not all(
                f"${{{k}}}" in template.template for k in ("upgrades", "downgrades")):
            raise ConfigError(f"the revision template {self.path / _TEMPLATE_NAME} has no "
                              "${upgrades} / ${downgrades}: add them (see mongrate's own "
                              "template) to write generated revisions")
        text = template.safe_substitute(
            message=docstring_body(message),
            rev_id=rev_id,
            down_revision_text=", ".join(down_revisions) or "",
            create_date=now.strftime("%Y-%m-%d %H:%M:%S"),
            revision_repr=repr(rev_id),
            down_revision_repr=rep(down_revisions),
            branch_labels_repr=rep(branch_labels),
            depends_on_repr=rep(depends_on),
            upgrades=upgrades,
            downgrades=downgrades,
            imports=imports,
        )
        if path.exists():
            raise ConfigError(f"{path} already exists; choose another message or --rev-id")
        return path, text
    def _file_stem(self, rev_id: str, slug: str, now: datetime) -> str:
        """The new file's name from ``file_template``: a plain name inside script_location,
        one that revision_files() will read (not starting with '.' or '_')."""
        template = self.config.file_template
        try:
            stem = template % {
                "rev": rev_id, "slug": slug, "year": now.year, "month": now.month,
                "day": now.day, "hour": now.hour, "minute": now.minute, "second": now.second,
            }
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"file_template {template!r} is invalid: {exc}") from None
        why = None
        if not stem.strip():
            why = "is empty"
        elif any(sep in stem for sep in ("/", "\\", "\0")) or stem in (".", ".."):
            why = "is a path, not a file name"
        elif stem.startswith((".", "_")):
            why = "starts with '.' or '_', so mongrate would never read the file"
        if why:
            raise ConfigError(
                f"file_template {template!r} gives the file name {stem!r}, which {why}; new "
                f"revisions go straight into {self.path}: use e.g. %(rev)s_%(slug)s"
            )
        return stem
