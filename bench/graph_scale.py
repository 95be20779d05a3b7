"""Benchmark: the revision graph in process at 5,000 revisions (no server, no CLI).

Times tests/engine/test_graph.py's ``work_at_scale`` (build the graph, plan and apply an
upgrade to its heads, resolve ids and labels, plan the downgrade to base, and the same on a
5,000-revision chain), the exact work its test checks for correctness. Median of several
runs, next to a reference measured in the same run: building the graph alone.
Goal: under 1 s (the speed goal the test suite used to assert; timings belong here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from test_graph import scale_graphs, work_at_scale  # noqa: E402

from mongrate.graph.revisions import RevisionGraph  # noqa: E402

GOAL_SECONDS = 1.0


def timed(fn, *args) -> float:
    began = time.perf_counter()
    fn(*args)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    revs, chain = scale_graphs(args.revisions)
    build = statistics.median(timed(RevisionGraph, revs) for _ in range(args.runs))
    work = statistics.median(timed(work_at_scale, revs, chain) for _ in range(args.runs))
    print(f"graph of {len(revs)} revisions (and a chain of {len(chain)}), median of {args.runs}")
    print(f"{'build the graph (reference)':<34}{build:>8.3f}s")
    print(f"{'build, plan, apply, resolve, down':<34}{work:>8.3f}s  ({work / build:.1f}x build)")
    ok = work < GOAL_SECONDS
    print(f"{'PASS' if ok else 'FAIL'} {len(revs)} revisions in {work:.3f}s (goal < {GOAL_SECONDS:g} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
