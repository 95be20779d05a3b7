"""Benchmark: `mongrate upgrade head --databases 'tenant_*'` over 50 tenant databases,
`--jobs 4` against `--jobs 1` in the same run.

Each tenant holds a few hundred items and 20 settings and gets four revisions, the shape of
a typical tenant migration: a settings field backfilled, an index on items, a new collection
with its index, an index on the backfilled field. Each command is timed whole
(process start included), on freshly seeded tenants, alternating the two job counts over
several rounds; the medians are compared. Goal: --jobs 4 at least 2.5x faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from pymongo import MongoClient

from mongrate.testing.server import server_url

BIN = Path(sys.executable).parent
GOAL = 2.5
REVISIONS = {
    "a1": (None, """
        op.update_many("settings", {"plan": {"$exists": False}}, {"$set": {"plan": "basic"}})
    """),
    "b2": ("a1", """
        op.create_index("items", [("owner", 1), ("created", -1)], name="owner_created")
    """),
    "c3": ("b2", """
        op.create_collection("audit")
        op.create_index("audit", [("at", -1)], name="at_desc")
    """),
    "d4": ("c3", """
        op.create_index("settings", [("plan", 1)], name="by_plan")
    """),
}


def write_project(root: Path, url: str) -> None:
    (root / "versions").mkdir(parents=True)
    for rev, (down, body) in REVISIONS.items():
        (root / "versions" / f"{rev}_step.py").write_text(
            f'"""step {rev}\n\nRevision ID: {rev}\n"""\nrevision = {rev!r}\n'
            f"down_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade(op):\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n\n\n"
            "def downgrade(op):\n    op.restore_undo()\n")
    (root / "mongrate.ini").write_text(
        f"[mongrate]\nurl = {url.rstrip('/')}/unused\nscript_location = versions\n")


def seed(client: MongoClient, tenants: int, docs: int) -> None:
    for t in range(tenants):
        name = f"tenant_{t:02d}"
        client.drop_database(name)
        client[name].items.insert_many(
            [{"owner": i % 17, "created": i, "title": f"item {i}"} for i in range(docs)])
        client[name].settings.insert_many([{"key": f"k{i}", "value": i} for i in range(20)])


def upgrade(root: Path, jobs: int, tenants: int) -> float:
    cmd = [str(BIN / "mongrate"), "--json", "upgrade", "head", "--databases", "tenant_*",
           "--jobs", str(jobs)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0 or proc.stdout.count('"status": "upgraded 4"') != tenants:
        raise SystemExit(f"upgrade --jobs {jobs} failed ({proc.returncode}): "
                         f"{proc.stderr[-800:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mongrate-bench-fleet-") as tmp, server_url() as url:
        return run(args, Path(tmp), url)


def run(args: argparse.Namespace, tmp: Path, url: str) -> int:
    client = MongoClient(url)
    write_project(tmp / "p", url)
    times: dict[int, list[float]] = {1: [], 4: []}
    for r in range(args.rounds):
        for jobs in ((1, 4) if r % 2 == 0 else (4, 1)):  # neither always goes first
            seed(client, args.tenants, args.docs)
            times[jobs].append(upgrade(tmp / "p", jobs, args.tenants))
    for t in range(args.tenants):
        client.drop_database(f"tenant_{t:02d}")
    one, four = statistics.median(times[1]), statistics.median(times[4])
    print(f"upgrade head over {args.tenants} tenants ({args.docs} items, 20 settings), "
          f"4 revisions each; "
          f"median of {args.rounds} rounds, whole command")
    print(f"  --jobs 1  {one:7.2f} s   ({', '.join(f'{x:.2f}' for x in times[1])})")
    print(f"  --jobs 4  {four:7.2f} s   ({', '.join(f'{x:.2f}' for x in times[4])})")
    ratio = one / four
    print(f"  ratio     {ratio:7.2f}x  on {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    ok = ratio >= GOAL
    print(f"{'PASS' if ok else 'FAIL'} --jobs 4 is {ratio:.2f}x --jobs 1 (goal >= {GOAL:g}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
