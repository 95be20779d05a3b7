"""Writing files: ``init``, ``revision`` and ``merge``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mongrate.config import DATABASE_NAME_RULE, DEFAULTS, Config, database_name_problem, ini_text
from mongrate.errors import ConfigError, MultipleHeadsError, RangeError
from mongrate.graph.scripts import ScriptDirectory


def init(directory: str | Path, *, url: str = "mongodb://127.0.0.1:27017/",
         database: str = "app", scripts: str = str(DEFAULTS["script_location"])) -> list[Path]:
    """Create ``mongrate.ini`` and an empty revisions folder in ``directory``."""
    problem = database_name_problem(database)
    if problem:
        raise ConfigError(f"--database {database!r} {problem}: {DATABASE_NAME_RULE}")
    directory = Path(directory)
    ini = directory / "mongrate.ini"
    if ini.exists():
        raise ConfigError(f"{ini} already exists; remove it or init another directory")
    (directory / scripts).mkdir(parents=True, exist_ok=True)
    ini.write_text(ini_text(url=url, database=database, scripts=scripts), encoding="utf-8")
    readme = directory / scripts / "README"
    if not readme.exists():
        readme.write_text("Revision files for mongrate: 'mongrate revision -m MESSAGE' adds one.\n")
    return [ini, directory / scripts]


def revision(config: Config, message: str, *, head: str = "head", splice: bool = False,
             branch_label: str | None = None, depends_on: Sequence[str] = (),
             rev_id: str | None = None) -> Path:
    """Write a new revision file on top of ``head`` (Alembic's ``--head`` rules)."""
    scripts = ScriptDirectory(config)
    path, text = render_revision(scripts, message, head=head, splice=splice,
                                 branch_label=branch_label, depends_on=depends_on,
                                 rev_id=rev_id)
    return scripts.write_file(path, text, rev_id)


def render_revision(scripts: ScriptDirectory, message: str, *, head: str = "head",
                    splice: bool = False, branch_label: str | None = None,
                    depends_on: Sequence[str] = (), rev_id: str | None = None,
                    **body: str) -> tuple[Path, str]:
    """The path and text of a new revision on top of ``head``; ``body``: the template's
    ``upgrades``, ``downgrades`` and ``imports``."""
    graph = scripts.graph
    if not message.strip():
        raise ConfigError("a revision needs a message: -m 'what it does'")
    if head == "base":
        parents: tuple[str, ...] = ()
    elif len(graph) == 0:
        if head not in ("head", "heads"):
            raise RangeError(f"there are no revisions yet, so --head {head} names nothing")
        parents = ()
    else:
        if head == "head" and len(graph.heads) > 1:
            raise MultipleHeadsError(
                f"several heads ({', '.join(graph.heads)}): pass --head REV or label@head, "
                "or join them first with 'mongrate merge heads -m MSG'"
            )
        parent = graph.resolve_one(head)
        if parent not in graph.heads and not splice:
            raise RangeError(
                f"{parent} is not a head; pass --splice to start a new branch from it"
            )
        parents = (parent,)
    deps = tuple(graph.resolve_one(d) for d in depends_on)
    return scripts.render_revision(message, down_revisions=parents, rev_id=rev_id,
                                   branch_labels=(branch_label,) if branch_label else (),
                                   depends_on=deps, **body)


def merge(config: Config, revisions: Sequence[str], message: str, *,
          branch_label: str | None = None, rev_id: str | None = None) -> Path:
    """Write a merge revision joining ``revisions`` (e.g. ``heads``)."""
    scripts = ScriptDirectory(config)
    graph = scripts.graph
    parents: list[str] = []
    for spec in revisions or ["heads"]:
        parents.extend(graph.resolve(spec))
    parents = sorted(set(parents))
    if len(parents) < 2:
        raise RangeError(f"nothing to merge: {', '.join(revisions) or 'heads'} is one revision")
    return scripts.write_revision(message, down_revisions=tuple(parents), rev_id=rev_id,
                                  branch_labels=(branch_label,) if branch_label else ())
