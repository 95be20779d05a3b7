"""Benchmark: `mongrate history` and `mongrate heads` on a 2,000-revision graph.

Builds a history with branches, merges and depends_on edges in a temp project, then times
the whole commands (process start included), median of several runs. References measured
in the same run: `mongrate --help` (the floor: interpreter + CLI start), and Alembic's
`alembic history` / `alembic heads` on the same graph written as Alembic revision files.
Goal: `mongrate --help` under 0.3 s; history/heads (revision metadata cache warm) at
least 5x faster than Alembic's; the cold figure (no cache: every file parsed) beside them.
Both tools' own modules run from compiled bytecode, as a pip install leaves them (an
editable install under PYTHONDONTWRITEBYTECODE would compile mongrate on every start).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results

BIN = Path(sys.executable).parent
GOAL = 5.0  # history/heads, cache warm, this many times faster than Alembic's
ENV: dict[str, str] = dict(os.environ)  # set in main(): a bytecode cache for both tools


def build_graph(n: int, seed: int = 1) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str | None]]:
    """(rev, down_revisions, depends_on, branch_label): mostly linear, with branches that
    run for a while and merge back, and an occasional dependency across branches."""
    rng = random.Random(seed)
    revs: list[tuple[str, tuple[str, ...], tuple[str, ...], str | None]] = []
    heads: list[str] = []
    for i in range(n):
        rev = f"{rng.getrandbits(48):012x}"
        label = None
        if not heads:
            down: tuple[str, ...] = ()
        elif len(heads) > 1 and rng.random() < 0.08:
            a, b = rng.sample(heads, 2)
            down = (a, b)
            heads = [h for h in heads if h not in (a, b)]
        elif len(heads) < 6 and rng.random() < 0.05:
            down = (rng.choice(heads),)  # branch: the parent stays a head too
            label = f"b{i}"
        else:
            down = (heads.pop(rng.randrange(len(heads))),)
        deps: tuple[str, ...] = ()
        if i > 50 and rng.random() < 0.02:
            deps = (revs[rng.randrange(i - 50)][0],)
        heads.append(rev)
        revs.append((rev, down, deps, label))
    while len(heads) > 1:  # one head at the end, like a tidy project
        a, b = heads.pop(), heads.pop()
        rev = f"{rng.getrandbits(48):012x}"
        revs.append((rev, (a, b), (), None))
        heads.append(rev)
    return revs


def rep(values: tuple[str, ...]) -> str:
    if not values:
        return "None"
    return repr(values[0]) if len(values) == 1 else repr(values)


def write_revisions(folder: Path, revs, *, takes_op: bool) -> None:
    """The same graph as revision files; Alembic's functions take no ``op`` argument."""
    folder.mkdir(parents=True)
    arg = "op" if takes_op else ""
    for rev, down, deps, label in revs:
        (folder / f"{rev}_step.py").write_text(
            f'"""step {rev}\n\nRevision ID: {rev}\n"""\nrevision = {rev!r}\n'
            f"down_revision = {rep(down)}\nbranch_labels = {rep((label,) if label else ())}\n"
            f"depends_on = {rep(deps)}\n\n\ndef upgrade({arg}):\n    pass\n\n\n"
            f"def downgrade({arg}):\n    pass\n")


def write_mongrate(root: Path, revs) -> None:
    write_revisions(root / "versions", revs, takes_op=True)
    (root / "mongrate.ini").write_text(
        "[mongrate]\nurl = mongodb://127.0.0.1:1/bench\nscript_location = versions\n")


def write_alembic(root: Path, revs) -> None:
    write_revisions(root / "versions", revs, takes_op=False)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    (root / "env.py").write_text("")
    (root / "script.py.mako").write_text("")


def timed(cmd: list[str], cwd: Path, runs: int, *, cold: bool = False) -> tuple[float, str]:
    """Median wall time of ``runs`` runs after one unmeasured warm-up; ``cold``: the
    metadata cache (``$XDG_CACHE_HOME/mongrate/graph``) removed before each run."""
    times, out = [], ""
    subprocess.run(cmd, cwd=cwd, capture_output=True, env=ENV)
    for _ in range(runs):
        if cold:
            shutil.rmtree(Path(ENV["XDG_CACHE_HOME"]) / "mongrate" / "graph", ignore_errors=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
        out = proc.stdout
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    revs = build_graph(args.revisions)
    tmp = Path(tempfile.mkdtemp(prefix="mongrate-bench-graph-"))
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    ENV["XDG_CACHE_HOME"] = str(tmp / "xdg-cache")  # mongrate's graph metadata cache
    try:
        write_mongrate(tmp / "m", revs)
        mongrate = [str(BIN / "mongrate")]
        help_t, _ = timed([*mongrate, "--help"], tmp / "m", args.runs)
        hist_t, hist_out = timed([*mongrate, "history"], tmp / "m", args.runs)
        heads_t, heads_out = timed([*mongrate, "heads"], tmp / "m", args.runs)
        cold_hist, _ = timed([*mongrate, "history"], tmp / "m", args.runs, cold=True)
        cold_heads, _ = timed([*mongrate, "heads"], tmp / "m", args.runs, cold=True)
        cold = {"mongrate history": cold_hist, "mongrate heads": cold_heads}
        merges = sum(1 for r in revs if len(r[1]) > 1)
        branches = sum(1 for r in revs if r[3])
        print(f"graph: {len(revs)} revisions, {merges} merges, {branches} labelled branches, "
              f"{sum(1 for r in revs if r[2])} depends_on edges; median of {args.runs} runs; "
              f"{results.load()}")
        assert len(hist_out.splitlines()) == len(revs), "history must list every revision"
        assert len(heads_out.splitlines()) == 1
        rows = [("mongrate --help (floor)", help_t, None), ("mongrate history", hist_t, None),
                ("mongrate heads", heads_t, None)]
        alembic = BIN / "alembic"
        if alembic.exists() or shutil.which("alembic"):
            write_alembic(tmp / "a", revs)
            a_hist, _ = timed([str(alembic), "history"], tmp / "a", args.runs)
            a_heads, _ = timed([str(alembic), "heads"], tmp / "a", args.runs)
            rows[1] = ("mongrate history", hist_t, a_hist)
            rows[2] = ("mongrate heads", heads_t, a_heads)
        else:
            print("(alembic not installed: pip install '.[test]' for the reference)")
        print(f"{'command (cache warm)':<26}{'mongrate s':>12}{'alembic s':>12}"
              f"{'alembic/mongrate':>18}{'cold s':>10}{'alembic/cold':>14}")
        for name, ours, ref in rows:
            ratio = f"{ref / ours:.2f}x" if ref else "-"
            c = cold.get(name)
            print(f"{name:<26}{ours:>12.3f}{(f'{ref:.3f}' if ref else '-'):>12}{ratio:>18}"
                  f"{(f'{c:.3f}' if c else '-'):>10}"
                  f"{(f'{ref / c:.2f}x' if c and ref else '-'):>14}")
        ok = help_t < 0.3
        print(f"{'PASS' if ok else 'FAIL'} startup: mongrate --help {help_t:.3f}s (goal < 0.3 s)")
        results.record("graph", "mongrate --help", f"{help_t:.3f} s", "-", "< 0.3 s", ok)
        for name, ours, ref in rows[1:]:
            if ref:
                fine = ref / ours >= GOAL
                ok &= fine
                print(f"{'PASS' if fine else 'FAIL'} {name}: {ours:.3f}s vs alembic {ref:.3f}s, "
                      f"{ref / ours:.2f}x faster (goal >= {GOAL:g}x); cold {cold[name]:.3f}s, "
                      f"{ref / cold[name]:.2f}x")
                results.record("graph", f"{name} (2,000 revisions)",
                               f"{ref / ours:.2f}x faster (cold {ref / cold[name]:.2f}x)",
                               f"alembic {ref:.3f} s", f">= {GOAL:g}x", fine)
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
