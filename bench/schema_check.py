"""Benchmark: `mongrate check` with drift detection on 200 collections x 5 indexes.

Builds a database of 200 collections with 5 indexes each (plus a little drift: indexes
dropped, added and changed by hand), declares the intended schema in schema.yaml, then
times the whole `mongrate check` command (process start included), median of several runs.
References measured in the same run: the same `check` without a declared schema (what the
drift detection adds) and `mongrate --help` (interpreter + CLI start). Goal: < 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient
from results import record

from mongrate.testing.server import server_url

BIN = Path(sys.executable).parent
GOAL = 2.0


def keys_of(c: int, i: int) -> list[tuple[str, int]]:
    return [(f"f{i}", 1), (f"g{(c + i) % 7}", -1 if i % 2 else 1)]


def build(db, collections: int, per: int) -> list[str]:
    """The database, and the drift lines check must report."""
    for c in range(collections):
        coll = db[f"coll_{c:03d}"]
        coll.insert_one({"c": c})
        for i in range(per):
            coll.create_index(keys_of(c, i), name=f"ix_{i}", unique=(i == 0))
    a, b, c = (f"coll_{n:03d}" for n in (7 % collections, collections // 2, collections - 1))
    db[a].drop_index("ix_3")                                  # dropped by hand
    db[b].create_index([("extra", 1)], name="by_hand")        # added by hand
    db[c].drop_index("ix_1")                                  # changed by hand
    db[c].create_index([("f1", 1)], name="ix_1")
    g = dict(keys_of(collections - 1, 1))
    return [
        f"{a}: index ix_3 missing (declared in schema.yaml)",
        f"{b}: index by_hand is not in schema.yaml (extra)",
        f"{c}: index ix_1 changed: keys {{f1: 1, {next(k for k in g if k != 'f1')}: "
        f"{g[next(k for k in g if k != 'f1')]}}} in schema.yaml, {{f1: 1}} in the database",
    ]


def schema_yaml(collections: int, per: int) -> str:
    lines = ["collections:"]
    for c in range(collections):
        lines += [f"  coll_{c:03d}:", "    indexes:"]
        for i in range(per):
            keys = ", ".join(f"{f}: {d}" for f, d in keys_of(c, i))
            unique = ", unique: true" if i == 0 else ""
            lines.append(f"      - {{name: ix_{i}, keys: {{{keys}}}{unique}}}")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], cwd: Path, runs: int, expect: int) -> tuple[float, str]:
    times, err = [], ""
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != expect:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-800:]}")
        err = proc.stderr
    return statistics.median(times), err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--indexes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mongrate-bench-check-") as tmp, server_url() as url:
        return run(args, Path(tmp), url)


def run(args: argparse.Namespace, tmp: Path, url: str) -> int:
    client = MongoClient(url)
    client.drop_database("bench_check")
    t = time.perf_counter()
    expected = build(client.bench_check, args.collections, args.indexes)
    print(f"built {args.collections} collections x {args.indexes} indexes in "
          f"{time.perf_counter() - t:.1f}s")
    (tmp / "versions").mkdir()
    (tmp / "schema.yaml").write_text(schema_yaml(args.collections, args.indexes))
    base = f"[mongrate]\nurl = {url.rstrip('/')}/bench_check\nscript_location = versions\n"
    (tmp / "plain.ini").write_text(base)
    (tmp / "schema.ini").write_text(base + "schema = schema.yaml\n")
    mongrate = [str(BIN / "mongrate")]
    help_t, _ = timed([*mongrate, "--help"], tmp, args.runs, 0)
    plain_t, _ = timed([*mongrate, "-c", "plain.ini", "check"], tmp, args.runs, 0)
    drift_t, err = timed([*mongrate, "-c", "schema.ini", "check"], tmp, args.runs, 1)
    found = [ln.split("schema drift: ", 1)[1] for ln in err.splitlines()
             if "schema drift: coll_" in ln]
    if found != expected:
        print("drift reported:\n  " + "\n  ".join(found))
        raise SystemExit("FAIL: check did not report exactly the drift made by hand")
    print(f"median of {args.runs} runs, whole command:")
    print(f"  mongrate --help (floor)          {help_t:7.3f} s")
    print(f"  mongrate check, no schema        {plain_t:7.3f} s")
    print(f"  mongrate check, drift detection  {drift_t:7.3f} s   "
          f"(+{drift_t - plain_t:.3f} s for {args.collections * args.indexes} indexes; "
          f"{drift_t / plain_t:.2f}x the check without it)")
    ok = drift_t < GOAL
    print(f"{'PASS' if ok else 'FAIL'} check with drift detection: {drift_t:.3f}s "
          f"(goal < {GOAL:g} s), {len(found)} differences found as made")
    record("schema_check", f"check with drift, {args.collections}x{args.indexes} indexes",
           f"{drift_t:.2f} s", f"check without schema {plain_t:.2f} s", f"< {GOAL:g} s", ok)
    client.drop_database("bench_check")
    client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
