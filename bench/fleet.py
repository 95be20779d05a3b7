"""Benchmark: `mongrate upgrade head --databases 'tenant_*'` over 50 tenant databases,
`--jobs 4` against `--jobs 1` in the same run.

Each tenant holds a few hundred items and 20 settings and gets four revisions, the shape of
a typical tenant migration: a settings field backfilled, an index on items, a new collection
with its index, an index on the backfilled field. Each command is timed whole
(process start included), on freshly seeded tenants, alternating the two job counts over
several rounds; the medians are compared.

Two settings, each with both job counts measured in the same run:
- network (the target): every command talks to the server through ``bench/netproxy.py``,
  a loopback proxy adding a fixed delay each way (2 ms by default, ``--latency-ms``), as a
  fleet's servers across a network would. Goal: --jobs 4 at least 3x faster.
- local: straight to the local server, where command and server share the machine's
  cores; printed with its ceiling (the CPU seconds of --jobs 1 over the cores).

The throwaway FerretDB keeps its SQLite files on ``/dev/shm`` (tmpfs) where there is one:
it commits every write to its file, and on one disk the 50 tenants' commits queue behind
each other (about 3 ms each here), a cost the servers of a real fleet do not share and not
the command's. ``--data-on-disk`` keeps them in the temporary directory on disk instead
(measured so: 2.46x to 3.04x in three runs, where tmpfs gave 3.06x and 3.24x).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import results
from netproxy import DelayProxy
from pymongo import MongoClient

from mongrate.testing.server import server_url

BIN = Path(sys.executable).parent
GOAL = 3.0  # --jobs 4 over --jobs 1, through the delaying proxy
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
    (root / "versions").mkdir(parents=True, exist_ok=True)
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


def server_pid(url: str) -> int | None:
    """The local server process listening on the URL's port (Linux), for its CPU time."""
    port = url.rstrip("/").rsplit(":", 1)[-1]
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--listen-addr=127.0.0.1:{port}".encode() in cmdline:
            return int(entry.name)
    return None


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of ``pid``, or of this process's finished children."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upgrade(root: Path, jobs: int, tenants: int, server: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and the server) of one fleet upgrade."""
    cmd = [str(BIN / "mongrate"), "--json", "upgrade", "head", "--databases", "tenant_*",
           "--jobs", str(jobs)]
    cpu = cpu_seconds(None) + (cpu_seconds(server) if server else 0.0)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    cpu = cpu_seconds(None) + (cpu_seconds(server) if server else 0.0) - cpu
    if proc.returncode != 0 or proc.stdout.count('"status": "upgraded 4"') != tenants:
        raise SystemExit(f"upgrade --jobs {jobs} failed ({proc.returncode}): "
                         f"{proc.stderr[-800:]}")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=2.0,
                        help="delay the proxy adds each way (network setting)")
    parser.add_argument("--only", choices=("network", "local"),
                        help="run one setting (default: both)")
    parser.add_argument("--data-on-disk", action="store_true",
                        help="the throwaway server's files on disk, not on /dev/shm")
    args = parser.parse_args()
    shm = None if args.data_on_disk or not os.path.isdir("/dev/shm") else "/dev/shm"
    with tempfile.TemporaryDirectory(prefix="mongrate-bench-fleet-") as tmp, \
            tempfile.TemporaryDirectory(prefix="mongrate-bench-fleet-db-", dir=shm) as data, \
            server_url(data) as url:
        if not os.environ.get("MONGRATE_TEST_URL"):
            print(f"throwaway FerretDB, its files in {data} "
                  f"({'tmpfs' if shm else 'on disk'})", flush=True)
        ok = True
        if args.only in (None, "network"):
            port = int(url.rstrip("/").rsplit(":", 1)[-1])
            with DelayProxy(("127.0.0.1", port), args.latency_ms / 1000) as proxy:
                ok &= run(args, Path(tmp) / "network", url,
                          f"mongodb://127.0.0.1:{proxy.port}/", network=True)
        if args.only in (None, "local"):
            ok &= run(args, Path(tmp) / "local", url, url, network=False)
        return 0 if ok else 1


def rounds(args: argparse.Namespace, root: Path, client: MongoClient,
           server: int | None) -> tuple[dict[int, list[float]], list[float]]:
    times: dict[int, list[float]] = {1: [], 4: []}
    cpus: list[float] = []
    for r in range(args.rounds):
        for jobs in ((1, 4) if r % 2 == 0 else (4, 1)):  # neither always goes first
            seed(client, args.tenants, args.docs)
            wall, cpu = upgrade(root, jobs, args.tenants, server)
            times[jobs].append(wall)
            if jobs == 1:
                cpus.append(cpu)
    return times, cpus


def run(args: argparse.Namespace, root: Path, url: str, command_url: str, *,
        network: bool) -> bool:
    """One setting: the command on ``command_url``, seeding straight on ``url``."""
    client = MongoClient(url)
    write_project(root, command_url)
    server = server_pid(url)
    times, cpus = rounds(args, root, client, server)
    for t in range(args.tenants):
        client.drop_database(f"tenant_{t:02d}")
    client.close()
    one, four = statistics.median(times[1]), statistics.median(times[4])
    setting = (f"through a proxy adding {args.latency_ms:g} ms each way" if network
               else "local server, no added latency")
    print(f"upgrade head over {args.tenants} tenants ({args.docs} items, 20 settings), "
          f"4 revisions each, {setting}; median of {args.rounds} rounds, whole command; "
          f"{results.load()}")
    print(f"  --jobs 1  {one:7.2f} s   ({', '.join(f'{x:.2f}' for x in times[1])})")
    print(f"  --jobs 4  {four:7.2f} s   ({', '.join(f'{x:.2f}' for x in times[4])})")
    ratio = one / four
    cores = os.cpu_count() or 1
    cpu = statistics.median(cpus)
    ceiling = one / (cpu / cores)
    print(f"  ratio     {ratio:7.2f}x  on {cores} cores")
    # command and server share the cores: side by side the jobs cannot go below the CPU
    # time of the work shared over them
    print(f"  --jobs 1 used {cpu:.2f} CPU-seconds (command{' + server' if server else ''}); "
          f"on {cores} free cores no job count can finish it in under {cpu / cores:.2f} s "
          f"(ceiling {ceiling:.2f}x)")
    if network:
        ok = ratio >= GOAL
        print(f"{'PASS' if ok else 'FAIL'} --jobs 4 is {ratio:.2f}x --jobs 1 with "
              f"{args.latency_ms:g} ms each way (goal >= {GOAL:g}x)")
        results.record("fleet", f"--jobs 4 vs 1, 50 tenants, +{args.latency_ms:g} ms each way",
                       f"{ratio:.2f}x ({four:.2f} s)", f"--jobs 1 {one:.2f} s",
                       f">= {GOAL:g}x", ok)
        return ok
    print(f"  (for information: {ratio:.2f}x of a {ceiling:.2f}x ceiling)")
    results.record("fleet", "--jobs 4 vs 1, 50 tenants, local (CPU-bound)",
                   f"{ratio:.2f}x ({four:.2f} s)", f"--jobs 1 {one:.2f} s",
                   f"info: ceiling {ceiling:.2f}x", None)
    return True


if __name__ == "__main__":
    sys.exit(main())
