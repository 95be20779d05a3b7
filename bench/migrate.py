"""The image-rendering revisions (versions/) at three data sizes, against two references.

For each size (default 50k, 100k and 200k messages, one upload per ten messages, 20
messages per session) a database is seeded with app_patch.testdata.seed, then timed:

- ``upgrade``: ``mongrate upgrade head`` as a whole command (a child process);
- ``downgrade``: ``mongrate downgrade base`` likewise (the database must come back
  identical; checked by content checksum of every non-mongrate collection);
- ``floor``: the plainest bulk copy of the collections the change snapshots and rewrites
  (chat_messages, file_uploads, chat_sessions): one batched find into insert_many each;
- ``per-document``: the original script's way: load every message and save each back
  with its own write, then one query per upload to find its message plus the two writes
  linking them. On this server a single-document write costs a scan of the collection, so
  only a sample of the per-document operations is timed (at least ``--sample-seconds``)
  and multiplied out to the full counts; the load of every message is timed in full.
  The printout says so.

Beside the wall times, CPU seconds: the command's own and, on a throwaway (loopback)
server, the server process's, for the floor and for ``upgrade head``; on a loaded machine
their ratio swings far less than the wall-time ratio (FerretDB's reads, not the client,
are most of the cost). Peak memory is the command's own maximum RSS (``os.wait4`` rusage, taken by a small
launcher process so that this process's size does not leak into the figure).
Each revision's share of the floor is printed (where the whole cannot reach its target,
it says which step costs what). Targets: upgrade >= 20x faster than per-document,
<= 1.5x the floor, and peak memory flat
across sizes (largest <= 1.25x smallest) and < 250 MB. Prints PASS/FAIL per target and
exits 1 if one fails.

Run: .venv/bin/python bench/migrate.py [--url URL] [--server S] [--messages N] [--quick]
(without --url the test servers are started, as the tests do: FerretDB, where the probe
picks the rewrite strategy, then mongo-java-server, where it picks in_place; --server
ferretdb|javaserver runs one of them)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from results import load, record  # noqa: E402

from app_patch.testdata.seed import seed  # noqa: E402
from mongrate.config import with_database  # noqa: E402
from mongrate.mongo.collections import collection_checksum  # noqa: E402

RAW = CodecOptions(document_class=RawBSONDocument)
COPIED = ("chat_messages", "file_uploads", "chat_sessions")
PER_SESSION = 20
BATCH = 1000
TARGET_VS_PER_DOC = 20.0
TARGET_VS_FLOOR = 1.5
TARGET_MEMORY_MB = 250.0
TARGET_MEMORY_GROWTH = 1.25


@dataclass
class Command:
    seconds: float
    peak_mb: float
    out: str
    cpu: float = 0.0  # the command's own CPU seconds (user + system)
    server_cpu: float | None = None  # the local server's CPU seconds meanwhile


@dataclass
class SizeResult:
    messages: int
    uploads: int
    documents: int
    upgrade: Command
    downgrade: Command
    floor: float
    per_doc: float
    per_doc_note: str
    identical: bool
    extra: dict = field(default_factory=dict)


# A small launcher runs the command and reports that child's own peak RSS. (Linux carries
# the forking process's RSS into a child's ru_maxrss across exec, so measuring straight from
# this process, which holds the seeded data, would report this process's size instead.)
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_mongrate(ini: Path, *args: str, server: int | None = None) -> Command:
    """One ``mongrate`` command as a child process; its wall time, its own peak RSS and
    CPU, and (``server``: the local server's pid) the server's CPU meanwhile."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        command = [sys.executable, "-m", "mongrate", "-c", str(ini), *args]
        server_before = cpu_seconds(server)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(peak_file), *command],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        seconds = time.perf_counter() - started
        server_after = cpu_seconds(server)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"mongrate {' '.join(args)} failed (exit {proc.returncode}):\n{text}")
        peak_kb, cpu = peak_file.read_text().split()
    return Command(seconds, int(peak_kb) / 1024, text, float(cpu),
                   None if server_after is None else server_after - server_before)


def server_pid(url: str) -> int | None:
    """The pid of the process listening on ``url``'s loopback port, if it is one of ours
    (a throwaway test server); None otherwise (``--url`` elsewhere)."""
    match = re.match(r"mongodb://(127\.0\.0\.1|localhost):(\d+)", url)
    if not match:
        return None
    port = f"{int(match[2]):04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[1].endswith(f":{port}") and cols[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None if unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fingerprint(db) -> dict[str, tuple]:
    """Content checksum and index specs of every non-mongrate collection."""
    return {n: (collection_checksum(db, n, BATCH), sorted(db[n].index_information().items()))
            for n in sorted(db.list_collection_names()) if not n.startswith("mongrate")}


def floor_copy(db, names: tuple[str, ...] = COPIED) -> float:
    """Batched find into insert_many of each collection; the copies are dropped."""
    started = time.perf_counter()
    for name in names:
        dst = db.get_collection(f"floor_{name}", codec_options=RAW)
        batch = []
        for doc in db.get_collection(name, codec_options=RAW).find().batch_size(BATCH):
            batch.append(doc)
            if len(batch) == BATCH:
                dst.insert_many(batch, ordered=False)
                batch = []
        if batch:
            dst.insert_many(batch, ordered=False)
    seconds = time.perf_counter() - started
    for name in names:
        db.drop_collection(f"floor_{name}")
    return seconds


def per_document(db, sample_seconds: float) -> tuple[float, str]:
    """The original script: every message loaded and saved back on its own; for every
    upload one query for its message and one write each to link them. Saves are sampled
    (see the module docstring); the writes store values the documents already have."""
    n_msgs = db.chat_messages.estimated_document_count()
    n_ups = db.file_uploads.estimated_document_count()
    started = time.perf_counter()
    loaded = 0
    for _ in db.chat_messages.find().batch_size(BATCH):  # "load every message"
        loaded += 1
    load = time.perf_counter() - started

    saves, started = 0, time.perf_counter()
    for msg in db.chat_messages.find().batch_size(50):
        msg.setdefault("file_ids", msg.get("file_ids") or [])
        db.chat_messages.replace_one({"_id": msg["_id"]}, msg)  # msg.save()
        saves += 1
        if time.perf_counter() - started >= sample_seconds and saves >= 5:
            break
    per_save = (time.perf_counter() - started) / saves

    links, started = 0, time.perf_counter()
    window = timedelta(minutes=2)
    for row in db.file_uploads.find().batch_size(50):
        when = row.get("uploaded_at")
        query = {"session_id": row.get("session_id"), "user_id": row.get("user_id"),
                 "role": "user"}
        if when is not None:
            query["created_at"] = {"$gte": when - window, "$lte": when + window}
        msg = db.chat_messages.find_one(query, sort=[("created_at", 1)])
        db.file_uploads.update_one({"_id": row["_id"]},
                                   {"$set": {"message_id": row.get("message_id")}})
        if msg is not None:
            db.chat_messages.update_one({"_id": msg["_id"]},
                                        {"$set": {"has_files": msg.get("has_files")}})
        links += 1
        if time.perf_counter() - started >= sample_seconds and links >= 3:
            break
    per_link = (time.perf_counter() - started) / links
    total = load + per_save * n_msgs + per_link * n_ups
    note = (f"load {load:.1f}s timed in full; {saves} saves ({per_save * 1000:.0f} ms each) and "
            f"{links} upload links ({per_link * 1000:.0f} ms each) timed, x {n_msgs} / {n_ups}")
    return total, note


def run_size(client, url: str, messages: int, sample_seconds: float, keep: bool) -> SizeResult:
    name = f"bench_migrate_{messages}_{uuid.uuid4().hex[:6]}"
    db = client[name]
    uploads = max(1, messages // 10)
    sessions = max(1, messages // PER_SESSION)
    print(f"\n== {messages:,} messages, {uploads:,} uploads, {sessions:,} sessions ==", flush=True)
    t = time.perf_counter()
    seed(db, sessions=sessions, messages_per_session=PER_SESSION, uploads=uploads, seed=1)
    print(f"seeded in {time.perf_counter() - t:.1f}s", flush=True)
    documents = sum(db[c].estimated_document_count() for c in COPIED)
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        ini = Path(tmp) / "mongrate.ini"
        ini.write_text(f"[mongrate]\nurl = {with_database(url, name)}\n"
                       f"script_location = {ROOT / 'versions'}\nprepend_sys_path = {ROOT}\n"
                       f"batch_size = {BATCH}\n")
        pid = server_pid(url)
        server_before, client_before = cpu_seconds(pid), time.process_time()
        floor = floor_copy(db)
        floor_cpu = time.process_time() - client_before
        floor_server = None if pid is None else cpu_seconds(pid) - server_before
        print(f"floor (bulk copy of {', '.join(COPIED)}): {floor:.1f}s; CPU: client "
              f"{floor_cpu:.1f}s{'' if pid is None else f', server {floor_server:.1f}s'}; "
              f"{load()}", flush=True)
        before = fingerprint(db)
        upgrade = run_mongrate(ini, "upgrade", "head", server=pid)
        print(f"upgrade head: {upgrade.seconds:.1f}s = {upgrade.seconds / floor:.2f} floors, "
              f"peak {upgrade.peak_mb:.0f} MB; {load()}", flush=True)
        # CPU seconds do not swing with the machine's load as wall time does
        print(f"  CPU: command {upgrade.cpu:.1f}s"
              + ("" if floor_server is None else
                 f", server {upgrade.server_cpu:.1f}s = {upgrade.server_cpu / floor_server:.2f}"
                 f" x the floor's server CPU; command + server = "
                 f"{(upgrade.cpu + upgrade.server_cpu) / (floor_cpu + floor_server):.2f} x the "
                 "floor's"), flush=True)
        for line in upgrade.out.splitlines():
            step = re.match(r"upgraded (\w+) in ([\d.]+)s", line)
            if step:
                print(f"    {step[1]} {float(step[2]):6.1f}s = {float(step[2]) / floor:4.2f} floors")
                record("migrate", f"{messages:,}: revision {step[1]}",
                       f"{float(step[2]) / floor:.2f} floors ({float(step[2]):.1f} s)",
                       f"floor {floor:.1f} s", "share of upgrade head", None)
            elif line.startswith("    "):  # the step's counts, one "name: count" a line
                print(f"    {line}")
        downgrade = run_mongrate(ini, "downgrade", "base")
        print(f"downgrade base: {downgrade.seconds:.1f}s, peak {downgrade.peak_mb:.0f} MB",
              flush=True)
        identical = fingerprint(db) == before
    per_doc, note = per_document(db, sample_seconds)
    print(f"per-document reference: {per_doc:.0f}s ({note})", flush=True)
    if not keep:
        client.drop_database(name)
    return SizeResult(messages, uploads, documents, upgrade, downgrade, floor, per_doc, note,
                      identical)


def report(results: list[SizeResult]) -> bool:
    print("\nsize      docs   upgrade  docs/s  peak MB  downgrade  docs/s  peak MB   floor"
          "  per-doc  vs per-doc  vs floor")
    for r in results:
        up, down = r.upgrade, r.downgrade
        print(f"{r.messages:>7,} {r.documents:>8,} {up.seconds:>8.1f}s {r.documents / up.seconds:>7,.0f}"
              f" {up.peak_mb:>8.0f} {down.seconds:>9.1f}s {r.documents / down.seconds:>7,.0f}"
              f" {down.peak_mb:>8.0f} {r.floor:>6.1f}s {r.per_doc:>7.0f}s"
              f" {r.per_doc / up.seconds:>10.0f}x {up.seconds / r.floor:>8.2f}x")
    checks = []
    for r in results:
        checks.append((f"{r.messages:,}: upgrade >= {TARGET_VS_PER_DOC:g}x faster than "
                       f"per-document ({r.per_doc / r.upgrade.seconds:.0f}x)",
                       r.per_doc / r.upgrade.seconds >= TARGET_VS_PER_DOC))
        checks.append((f"{r.messages:,}: upgrade <= {TARGET_VS_FLOOR:g}x the floor "
                       f"({r.upgrade.seconds / r.floor:.2f}x)",
                       r.upgrade.seconds <= TARGET_VS_FLOOR * r.floor,
                       f"{r.upgrade.seconds / r.floor:.2f}x floor ({r.upgrade.seconds:.1f} s)",
                       f"floor {r.floor:.1f} s", f"<= {TARGET_VS_FLOOR:g}x"))
        checks.append((f"{r.messages:,}: downgrade base restored the database exactly",
                       r.identical))
    checks += memory_checks([max(r.upgrade.peak_mb, r.downgrade.peak_mb) for r in results])
    return print_checks(checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="MongoDB/FerretDB server URL (default: a throwaway FerretDB)")
    parser.add_argument("--messages", type=int, default=200_000,
                        help="largest size; also runs 1/4 and 1/2 of it (default 200000)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (2k, 4k, 8k messages) for a fast check")
    parser.add_argument("--sample-seconds", type=float, default=10.0,
                        help="time spent sampling each kind of per-document write")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    add_server_option(parser)
    args = parser.parse_args()
    top = 8_000 if args.quick else args.messages
    if top < 400:
        parser.error("--messages must be at least 400")
    sizes = [top // 4, top // 2, top]

    def run(client, url: str) -> int:
        results = [run_size(client, url, n, args.sample_seconds, args.keep) for n in sizes]
        return 0 if report(results) else 1

    return on_server(args.url, run, args.server)


def add_server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", choices=("ferretdb", "javaserver", "both"), default="both",
                        help="throwaway test server(s) to run on without --url: FerretDB 1.24 "
                             "(write strategy rewrite) and/or mongo-java-server (in_place); "
                             "default both, one after the other")


def on_server(url: str | None, run, server: str = "both") -> int:
    """``run(client, url)`` against ``url``, else $MONGRATE_TEST_URL, else each throwaway
    test server ``server`` names; prints the write strategy the probe picks on each."""
    from contextlib import nullcontext

    from mongrate.testing.server import SERVERS, server_url

    names = [None] if url or os.environ.get("MONGRATE_TEST_URL") else (
        list(SERVERS) if server == "both" else [server])
    code = 0
    for name in names:
        with nullcontext(url) if url else server_url(server=name or "ferretdb") as where:
            client = MongoClient(where, tz_aware=False, socketTimeoutMS=3_600_000)
            try:
                print(f"\n=== server: {name or where} ({strategy_of(client)})", flush=True)
                code = max(code, run(client, where))
            finally:
                client.close()
    return code


def strategy_of(client: MongoClient) -> str:
    """The write strategy ``auto`` picks on this server (the probe runs in a scratch
    database, dropped afterwards)."""
    from mongrate.operations.strategy import choose

    name = f"mongrate_bench_probe_{uuid.uuid4().hex[:8]}"
    try:
        return choose(client[name]).describe()
    finally:
        client.drop_database(name)


def memory_checks(peaks: list[float]) -> list[tuple[str, bool]]:
    """Peak RSS under the cap and flat across sizes."""
    growth = max(peaks) / min(peaks)
    return [(f"peak memory < {TARGET_MEMORY_MB:g} MB ({max(peaks):.0f} MB)",
             max(peaks) < TARGET_MEMORY_MB),
            (f"peak memory flat across sizes (largest / smallest = {growth:.2f}, "
             f"<= {TARGET_MEMORY_GROWTH:g})", growth <= TARGET_MEMORY_GROWTH)]


def print_checks(checks: list[tuple]) -> bool:
    """PASS/FAIL a line; True if all passed. A check is (text, passed) or (text, passed,
    figure, reference, target): the latter also goes to the summary table as such."""
    bench = Path(sys.argv[0]).stem
    for text, passed, *row in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
        if not row:  # the figure is the text's last parenthesis, if it has one
            has = text.endswith(")") and " (" in text
            row = [text.rsplit(" (", 1)[1][:-1] if has else ("yes" if passed else "no"),
                   "-", "-"]
        record(bench, text.rsplit(" (", 1)[0], *row, passed)
    return all(passed for _, passed, *_ in checks)


if __name__ == "__main__":
    sys.exit(main())
