"""The ``mongrate`` command: parse options, call one verb of mongrate.commands, render.

Exit codes: 0 success, 1 a revision failed (or ``check`` found problems), 2 usage,
config or graph error, 3 lock not acquired in time, 4 the server stopped answering mid-run. Heavy imports (pymongo) happen
inside the commands so ``mongrate --help`` starts fast.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from mongrate.config import DEFAULT_LOCK_TIMEOUT
from mongrate.text import columns, counts

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCK, EXIT_SERVER_LOST = 0, 1, 2, 3, 4


@dataclass
class Options:
    config_path: str | None
    url: str | None
    verbose: bool
    as_json: bool

    def config(self, *, required: bool = True):
        from mongrate.config import load_config

        cfg = load_config(self.config_path, required=required)
        url = self.url or os.environ.get("MONGRATE_URL")
        return cfg.with_overrides(url=url)

    def project(self):
        from mongrate.commands import Project
        from mongrate.progress import Reporter

        return Project(self.config(), Reporter(quiet=self.as_json, verbose=self.verbose))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def emit(opts: Options, data: Any, text: str | None = None) -> None:
    if opts.as_json:
        click.echo(json.dumps(data, default=_json_default, indent=2, sort_keys=True))
    elif text is not None:
        click.echo(text)


pass_opts = click.make_pass_decorator(Options)


def _local_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_object(Options).verbose = True
    return value


class Seconds(click.ParamType):
    """A finite number of seconds, >= 0 (``nan`` would wait forever)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(f"{value!r} must be a finite number of seconds, 0 or more", param, ctx)
        return seconds


_STEP_DOWN = re.compile(r"^-\d+$")


class TargetCommand(click.Command):
    """A command whose targets may be ``-N``, which click would take for an option: such
    tokens are moved behind ``--``, so unknown options still fail as unknown options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        valued = {o for p in self.params if isinstance(p, click.Option)
                  and not p.is_flag and not p.count for o in p.opts}
        kept: list[str] = []
        steps: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                kept += args[i:]
                break
            if _STEP_DOWN.match(arg) and not (kept and kept[-1] in valued):
                steps.append(arg)
            else:
                kept.append(arg)
        if steps and "--" in kept:
            at = kept.index("--") + 1
            kept[at:at] = steps
        elif steps:
            kept += ["--", *steps]
        return super().parse_args(ctx, kept)


# `mongrate history -v` as well as `mongrate -v history` (added to every command below)
VERBOSE_OPTION = click.Option(["-v", "--verbose", "local_verbose"], is_flag=True,
                              expose_value=False, callback=_local_verbose,
                              help="More detail; tracebacks on errors.")
LOCK_TIMEOUT = click.option("--lock-timeout", type=Seconds(), default=DEFAULT_LOCK_TIMEOUT,
                            show_default=True,
                            help="Seconds to wait for another run's lock before exiting 3.")
DRY_RUN = click.option("--dry-run", is_flag=True,
                       help="Print the plan and the writes each step would send; write nothing.")


def fleet_options(verb: str):
    """``--databases PATTERN`` (repeatable), ``--jobs N`` and ``--fail-fast`` for ``verb``:
    with patterns (here or 'databases' in the ini) the command runs on each matching
    database and ends with the table; without, it runs as written below."""
    def decorate(f):
        @click.option("--databases", "fleet_patterns", multiple=True, metavar="PATTERN",
                      help="Run on every database matching this name or glob (repeatable).")
        @click.option("--jobs", "fleet_jobs", type=click.IntRange(min=1),
                      help="Databases worked on at once (default: the ini's jobs, 1).")
        @click.option("--fail-fast", "fleet_fail_fast", is_flag=True,
                      help="Start no further database once one fails.")
        @functools.wraps(f)
        def run(*args: Any, fleet_patterns: tuple[str, ...], fleet_jobs: int | None,
                fleet_fail_fast: bool, **kwargs: Any) -> None:
            opts = click.get_current_context().find_object(Options)
            config = opts.config()
            if not (fleet_patterns or config.databases):
                if fleet_jobs or fleet_fail_fast:
                    raise click.UsageError("--jobs and --fail-fast go with --databases "
                                           "(or 'databases' in [mongrate])")
                return f(*args, **kwargs)
            from mongrate.commands import fleet
            from mongrate.errors import FleetFailed
            from mongrate.progress import Reporter

            result = fleet.run_fleet(config, verb, fleet_patterns, jobs=fleet_jobs,
                                     fail_fast=fleet_fail_fast, verbose=opts.verbose,
                                     reporter=Reporter(quiet=opts.as_json), **kwargs)
            emit(opts, result.as_dict(), fleet.table(result))
            if not result.ok:
                raise FleetFailed(f"{len(result.failed)} of {len(result.rows)} database(s) "
                                  f"did not succeed: {', '.join(r.database for r in result.failed)}")
        return run
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", metavar="FILE",
              help="Config file (default ./mongrate.ini or $MONGRATE_CONFIG).")
@click.option("--url", help="Server URL (default $MONGRATE_URL, else the config's url).")
@click.option("-v", "--verbose", is_flag=True, help="More detail; tracebacks on errors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output where it is data.")
@click.version_option(package_name="mongrate", prog_name="mongrate")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, url: str | None, verbose: bool,
        as_json: bool) -> None:
    """Versioned schema and data migrations for MongoDB."""
    ctx.obj = Options(config_path, url, verbose, as_json)


# --------------------------------------------------------------- scaffolding
@cli.command()
@click.argument("directory", default=".")
@click.option("--database", default="app", show_default=True)
@pass_opts
def init(opts: Options, directory: str, database: str) -> None:
    """Create mongrate.ini and a versions/ folder in DIRECTORY."""
    from mongrate import commands

    url = opts.url or os.environ.get("MONGRATE_URL") or "mongodb://127.0.0.1:27017/"
    paths = commands.init(directory, url=url, database=database)
    emit(opts, [str(p) for p in paths], "\n".join(f"created {p}" for p in paths))


@cli.command()
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--head", default="head", show_default=True, help="Parent revision (or base).")
@click.option("--splice", is_flag=True, help="Allow a parent that is not a head (new branch).")
@click.option("--branch-label", help="Label for a new branch.")
@click.option("--depends-on", multiple=True, help="Revision this one depends on (repeatable).")
@click.option("--rev-id", help="Choose the id instead of a random one.")
@click.option("--autogenerate", is_flag=True,
              help="Fill it with the op calls that make the database match schema.yaml.")
@click.option("--dry-run", is_flag=True, help="With --autogenerate: print the file, write nothing.")
@pass_opts
def revision(opts: Options, message: str, head: str, splice: bool, branch_label: str | None,
             depends_on: tuple[str, ...], rev_id: str | None, autogenerate: bool,
             dry_run: bool) -> None:
    """Write a new revision file from the template."""
    from mongrate import commands

    if dry_run and not autogenerate:
        raise click.UsageError("--dry-run goes with --autogenerate (a plain revision is a template)")
    if autogenerate:
        _autogenerate(opts, message, head=head, splice=splice, branch_label=branch_label,
                      depends_on=depends_on, rev_id=rev_id, dry_run=dry_run)
        return
    path = commands.revision(opts.config(), message, head=head, splice=splice,
                             branch_label=branch_label, depends_on=depends_on, rev_id=rev_id)
    emit(opts, {"path": str(path)}, f"created {path}")


def _autogenerate(opts: Options, message: str, **kwargs: Any) -> None:
    from mongrate import commands
    from mongrate.commands.fleet import one_database
    from mongrate.progress import Reporter

    config, chosen = one_database(opts.config())
    project = commands.Project(config, Reporter(quiet=opts.as_json))
    if chosen:
        project.reporter.info(f"comparing with {chosen}, the first database 'databases' matches")
    result = commands.autogenerate(project, message, **kwargs)
    data = {"changes": result.diff.lines(), "path": str(result.path) if result.path else None,
            "written": result.written, "needs": list(result.needs),
            "text": result.text if kwargs.get("dry_run") else None}
    if not result.diff:
        text = "no changes: the database matches the declared schema; nothing written"
    elif result.written:
        text = "\n".join([f"  {line}" for line in result.diff.lines()]
                         + [f"created {result.path} ({len(result.diff)} change(s)): review it"])
    else:
        text = (result.text or "").rstrip("\n") + f"\n# dry run: {result.path} was not written"
    emit(opts, data, text)


@cli.command()
@click.argument("revisions", nargs=-1)
@click.option("-m", "--message", required=True)
@click.option("--branch-label")
@click.option("--rev-id")
@pass_opts
def merge(opts: Options, revisions: tuple[str, ...], message: str, branch_label: str | None,
          rev_id: str | None) -> None:
    """Write a revision that joins REVISIONS (default: heads)."""
    from mongrate import commands

    path = commands.merge(opts.config(), list(revisions), message, branch_label=branch_label,
                          rev_id=rev_id)
    emit(opts, {"path": str(path)}, f"created {path}")


# ----------------------------------------------------------------- migrating
def _render_run(opts: Options, result) -> None:
    data = {
        "direction": result.direction,
        "dry_run": result.dry_run,
        "heads_before": list(result.heads_before),
        "heads_after": list(result.heads_after),
        "resumed": [e["revision"] for e in result.resumed],
        "strategy": result.strategy,
        "steps": [{"revision": s.revision, "duration": round(s.duration, 3), "note": s.note,
                   "writes": s.writes, "results": s.results} for s in result.steps],
    }
    lines = []
    if not result.steps:
        lines.append(f"nothing to {result.direction}: at {', '.join(result.heads_before) or 'base'}")
    for s in result.steps:
        if result.dry_run:
            lines.append(f"{s.revision}: {len(s.writes)} write(s) would be sent")
            lines.extend(f"    {w['method']} {w['collection']} {w['args']}" for w in s.writes)
        else:
            what = "reverted the partial upgrade of" if s.note == "reverted" else f"{s.direction}d"
            lines.append(f"{what} {s.revision} in {s.duration:.2f}s")
            lines.extend(counts(s.results))
    if result.steps and not result.dry_run:
        lines.append(f"now at {', '.join(result.heads_after) or 'base'}")
    if result.dry_run:
        lines.append("dry run: nothing was written")
    emit(opts, data, "\n".join(lines))


@cli.command(cls=TargetCommand)
@click.argument("target", default="head")
@DRY_RUN
@LOCK_TIMEOUT
@fleet_options("upgrade")
@pass_opts
def upgrade(opts: Options, target: str, dry_run: bool, lock_timeout: float) -> None:
    """Apply revisions up to TARGET (head, heads, +N, REV, label@head...)."""
    from mongrate import commands

    project = opts.project()
    _render_run(opts, commands.upgrade(project, target, dry_run=dry_run, lock_timeout=lock_timeout))


@cli.command(cls=TargetCommand)
@click.argument("target")
@DRY_RUN
@LOCK_TIMEOUT
@fleet_options("downgrade")
@pass_opts
def downgrade(opts: Options, target: str, dry_run: bool, lock_timeout: float) -> None:
    """Reverse revisions down to TARGET (-1, base, REV, label@base...)."""
    from mongrate import commands

    project = opts.project()
    _render_run(opts, commands.downgrade(project, target, dry_run=dry_run,
                                         lock_timeout=lock_timeout))


@cli.command(cls=TargetCommand)
@click.argument("revisions", nargs=-1, required=True)
@click.option("--purge", is_flag=True, help="Clear the version collection first.")
@LOCK_TIMEOUT
@fleet_options("stamp")
@pass_opts
def stamp(opts: Options, revisions: tuple[str, ...], purge: bool, lock_timeout: float) -> None:
    """Record REVISIONS as applied without running anything."""
    from mongrate import commands

    heads = commands.stamp(opts.project(), revisions, purge=purge, lock_timeout=lock_timeout)
    emit(opts, {"heads": list(heads)}, f"stamped: now at {', '.join(heads) or 'base'}")


@cli.command()
@click.option("--force", is_flag=True, help="Release even a lock whose lease is live.")
@pass_opts
def unlock(opts: Options, force: bool) -> None:
    """Release the migration lock left by a dead run."""
    from mongrate import commands

    holder = commands.unlock(opts.project(), force=force)
    emit(opts, {"released": holder.describe() if holder else None},
         f"released the lock held by {holder.describe()}" if holder else "the lock was free")


# ------------------------------------------------------------------- reading
def _rev_line(graph, rev_id: str, current: set[str], verbose: bool) -> str:
    from mongrate.graph.revisions import format_rev_line

    return format_rev_line(graph, rev_id, current=frozenset(current), verbose=verbose)


def _rev_data(rev) -> dict:
    return {"revision": rev.revision, "down_revisions": list(rev.down_revisions),
            "depends_on": list(rev.depends_on), "branch_labels": sorted(rev.branch_labels),
            "message": rev.message, "path": rev.path, "create_date": rev.create_date}


@cli.command()
@fleet_options("current")
@pass_opts
def current(opts: Options) -> None:
    """Show the revisions the database is at, interrupted steps and the lock."""
    from mongrate import commands

    project = opts.project()
    state = commands.current(project, verbose=opts.verbose)
    lines = [_rev_line(project.graph, r.revision, set(state.heads), opts.verbose)
             for r in state.revisions]
    lines += [f"{u} (recorded in {project.config.version_collection}, but no revision file "
              "defines it: restore the file, or 'mongrate stamp --purge REV' to record the "
              "right revision)" for u in state.unknown]
    if not state.heads:
        lines.append("<base> (no revision applied)")
    if state.pending:
        lines.append(f"{len(state.pending)} revision(s) pending: {', '.join(state.pending)}")
    for e in state.running:
        lines.append(f"RUNNING: {e['direction']} of {e['revision']} since "
                     f"{e['started_at']:%Y-%m-%d %H:%M:%S} UTC by {e.get('host')} pid "
                     f"{e.get('pid')} ('mongrate {state.lock.command}'), which holds the lock "
                     f"(lease renewed until {state.lock.expires_at:%H:%M:%S} UTC)")
    for e in state.interrupted:
        lines.append(f"INTERRUPTED: {e['direction']} of {e['revision']} started "
                     f"{e['started_at']:%Y-%m-%d %H:%M:%S} UTC by {e.get('host')} pid {e.get('pid')}"
                     f", whose run is gone; the next '{e['direction']}' resumes it")
    if state.lock:
        lines.append(f"lock held by {state.lock.describe()}")
    if opts.verbose:
        from mongrate.commands import log_summary

        for head, entries in state.log.items():
            lines.append(f"log of {head}:")
            for e in entries:
                lines.append("  " + log_summary(e))
                lines.extend(counts(e.get("results") or {}, indent="      "))
    emit(opts, {
        "heads": list(state.heads), "unknown": state.unknown, "pending": state.pending,
        "interrupted": [{k: v for k, v in e.items() if k != "traceback"} for e in state.interrupted],
        "running": [{k: v for k, v in e.items() if k != "traceback"} for e in state.running],
        "lock": state.lock.__dict__ if state.lock else None,
    }, "\n".join(lines))


@cli.command()
@click.option("-r", "--rev-range", help="START:END, e.g. base:head, current:, -3:current.")
@click.option("-i", "--indicate-current", is_flag=True, help="Mark the database's revisions.")
@pass_opts
def history(opts: Options, rev_range: str | None, indicate_current: bool) -> None:
    """List revisions, newest first."""
    from mongrate import commands
    from mongrate.config import load_config
    from mongrate.progress import Reporter

    needs_db = indicate_current or (rev_range is not None and "current" in rev_range)
    config = load_config(opts.config_path)
    url = opts.url or os.environ.get("MONGRATE_URL") or config.url
    project = commands.Project(config.with_overrides(url=url), Reporter(quiet=opts.as_json))
    ids, current_heads = commands.history(project, rev_range, indicate_current=indicate_current)
    # -v shows each revision's log when a server is configured; history itself needs none
    show_log = opts.verbose and (needs_db or url is not None)
    if show_log and not needs_db:
        from mongrate.errors import ConnectionFailure

        try:
            _ = project.store  # connects
        except ConnectionFailure as exc:
            show_log = False
            click.echo(f"mongrate: no log shown: {exc}", err=True)
    logs = project.store.log_entries(ids) if show_log else {}
    lines = []
    for rev_id in ids:
        lines.append(_rev_line(project.graph, rev_id, current_heads, opts.verbose))
        if show_log:
            for e in logs.get(rev_id, []):
                lines.append("    log: " + commands.log_summary(e))
                lines.extend(counts(e.get("results") or {}, indent="        "))
        if opts.verbose:
            lines.append("")
    emit(opts, [_rev_data(project.graph.get(r)) for r in ids], "\n".join(lines))


@cli.command()
@pass_opts
def heads(opts: Options) -> None:
    """Show the head revisions of the scripts."""
    from mongrate import commands
    from mongrate.graph.scripts import ScriptDirectory

    config = opts.config()
    scripts = ScriptDirectory(config)  # one read of the files for both
    revs = commands.heads(config, scripts)
    graph = scripts.graph
    emit(opts, [_rev_data(r) for r in revs],
         "\n".join(_rev_line(graph, r.revision, set(), opts.verbose) for r in revs))


@cli.command()
@pass_opts
def branches(opts: Options) -> None:
    """Show branch points and the branches that leave them."""
    from mongrate import commands
    from mongrate.graph.scripts import ScriptDirectory

    config = opts.config()
    scripts = ScriptDirectory(config)  # one read of the files for both
    points = commands.branches(config, scripts)
    graph = scripts.graph
    lines = []
    for point, children in points:
        lines.append(_rev_line(graph, point.revision, set(), opts.verbose))
        lines.extend(f"    -> {c.revision}, {c.message}" for c in children)
    emit(opts, [{"revision": p.revision, "children": [c.revision for c in cs]}
                for p, cs in points], "\n".join(lines) or "no branch points")


@cli.command()
@click.argument("rev")
@pass_opts
def show(opts: Options, rev: str) -> None:
    """Show one revision in full."""
    from mongrate import commands
    from mongrate.graph.scripts import ScriptDirectory

    config = opts.config()
    scripts = ScriptDirectory(config)  # one read of the files for both
    found = commands.show(config, rev, scripts)
    graph = scripts.graph
    emit(opts, _rev_data(found), _rev_line(graph, found.revision, set(), True))


@cli.command()
@fleet_options("check")
@pass_opts
def check(opts: Options) -> None:
    """Exit 1 with reasons if there are several heads, pending or interrupted steps, an
    applied revision's file changed since it ran, or the database differs from the
    declared schema (schema.yaml)."""
    from mongrate import commands

    project = opts.project()
    commands.check(project)
    schema = ", matches the declared schema" if project.config.schema else ""
    emit(opts, {"ok": True},
         f"ok: one head, database up to date, no changed or interrupted revisions{schema}")


# ------------------------------------------------------------------- backups
@cli.group()
def backup() -> None:
    """List, restore and drop the snapshots made by backup revisions."""


@backup.command("list")
@pass_opts
def backup_list(opts: Options) -> None:
    """List backup snapshots, newest first."""
    from mongrate import commands

    items = commands.list_backups(opts.project())
    lines = columns(("backup", "source", "snapshot", "status", "documents", "revision",
                     "created (UTC)"),
                    ((b.get("backup_id"), b.get("source"), b.get("target"), b.get("status"),
                      b.get("count"), b.get("revision"), b.get("created_at")) for b in items),
                    right=(4,))
    emit(opts, items, "\n".join(lines) if items else "no backups")


@backup.command("restore")
@click.argument("backup_id")
@click.option("--collections", multiple=True, help="Only these source collections.")
@click.option("--yes", is_flag=True, help="Overwrite a live collection that changed since.")
@LOCK_TIMEOUT
@pass_opts
def backup_restore(opts: Options, backup_id: str, collections: tuple[str, ...], yes: bool,
                   lock_timeout: float) -> None:
    """Put a snapshot back into its collection (documents differing are replaced)."""
    from mongrate import commands

    reports = commands.restore_backup(opts.project(), backup_id, collections=collections,
                                     yes=yes, lock_timeout=lock_timeout)
    emit(opts, [r.__dict__ for r in reports], "\n".join(r.describe() for r in reports))


@backup.command("drop")
@click.argument("backup_id")
@LOCK_TIMEOUT
@pass_opts
def backup_drop(opts: Options, backup_id: str, lock_timeout: float) -> None:
    """Drop a backup's snapshot collections and mark their manifests dropped."""
    from mongrate import commands

    manifest = commands.drop_backup(opts.project(), backup_id, lock_timeout=lock_timeout)
    emit(opts, manifest, f"dropped {manifest['target']}")


def _accept_verbose(group: click.Group) -> None:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_verbose(command)
        elif not any(p.name == "local_verbose" for p in command.params):
            command.params.append(VERBOSE_OPTION)


_accept_verbose(cli)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line on errors, the traceback only with -v."""
    verbose = any(a in ("-v", "--verbose") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        cli.main(args=argv, prog_name="mongrate", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mongrate: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.UsageError as exc:
        where = f"'{exc.ctx.command_path} --help'" if exc.ctx else "'mongrate --help'"
        click.echo(f"mongrate: error: {exc.format_message()} (see {where})", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        from mongrate.errors import CheckFailed, MongrateError

        if verbose:
            import traceback

            traceback.print_exc()
        if isinstance(exc, CheckFailed) and exc.problems:
            for problem in exc.problems:
                click.echo(f"mongrate: check: {problem}", err=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, MongrateError):
            click.echo(f"mongrate: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        lost = getattr(sys.modules.get("pymongo.errors"), "ConnectionFailure", None)
        if lost is not None and isinstance(exc, lost):  # outside a run: nothing to resume
            click.echo(f"mongrate: error: the server stopped answering ({type(exc).__name__}); "
                       "run the command again once it is back", err=True)
            sys.exit(EXIT_SERVER_LOST)
        click.echo(f"mongrate: unexpected error: {type(exc).__name__}: {exc} "
                   "(rerun with -v for the traceback)", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)
