"""Migrations with the application writing: lost writes, its throughput, the migration's time.

For each size (default 20k and 100k messages) and each of bench/authoring.py's two
revisions (``update_many`` and ``change_each``), on a server where mongrate writes in place
(a throwaway mongo-java-server, or MongoDB: pass ``--url``):

1. the application alone: bounded writer threads (updates of a field of their own and of
   a subdocument field, inserts, deletes) for a fixed time: its idle throughput;
2. ``mongrate upgrade`` and ``downgrade`` (child processes) with no writer: their time;
3. the same commands with the writers running throughout: every acknowledged write is
   checked afterwards, the writers' throughput meanwhile, the commands' time.

Targets: 0 lost writes; the application keeps >= 70% of its idle throughput; the migration
takes <= 1.5x its time without writers. Prints PASS/FAIL per target; exit 1 on a miss.

Run: .venv/bin/python bench/online.py [--url URL] [--messages N] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from authoring import REVISIONS, seed_messages, write_project  # noqa: E402
from migrate import print_checks, run_mongrate  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from mongrate.config import with_database  # noqa: E402
from mongrate.testing.writers import AppWriters  # noqa: E402

TARGET_LOST = 0
TARGET_THROUGHPUT = 0.70
TARGET_TIME = 1.5
IDLE_SECONDS = 5.0
THREADS = 2


def writers(url: str, db, ids: list, tag: str, seed: int, seconds: float) -> AppWriters:
    return AppWriters(url, db.name, "chat_messages", ids, threads=THREADS, max_ops=10**9,
                      seconds=seconds, deletable=ids[-200:], seed=seed, tag=tag,
                      insert={"role": "user", "content": "written during the migration"})


def run_size(client, url: str, messages: int) -> dict:
    name = f"bench_online_{messages}_{uuid.uuid4().hex[:6]}"
    db = client[name]
    print(f"\n== {messages:,} messages ==", flush=True)
    seed_messages(db, messages)
    ids = [d["_id"] for d in db.chat_messages.find({}, {"_id": 1})]
    out = {"messages": messages, "rows": []}
    dburl = with_database(url, name)
    idle = writers(url, db, ids[:-400], "idle", 1, IDLE_SECONDS).start().wait()
    out["idle"] = idle.ops_per_second
    print(f"application alone: {idle.acknowledged} writes in {IDLE_SECONDS:g}s, "
          f"{idle.ops_per_second:,.0f}/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        ini = write_project(Path(tmp), dburl)
        # in place is what is measured: the probe can pick rewrite on a machine under load
        ini.write_text(ini.read_text() + "write_strategy = in_place\n")
        previous = "base"
        for n, rev in enumerate(REVISIONS):
            alone_up = run_mongrate(ini, "upgrade", rev)
            alone_down = run_mongrate(ini, "downgrade", previous)
            app = writers(url, db, ids[:-400], f"w{n}", 10 + n, 3600).start()
            up = run_mongrate(ini, "upgrade", rev)
            down = run_mongrate(ini, "downgrade", previous)
            app.stop()
            lost = app.lost(db)
            run_mongrate(ini, "upgrade", rev)  # the next revision runs on top of this one
            previous = rev
            row = {"rev": rev, "alone": alone_up.seconds + alone_down.seconds,
                   "with": up.seconds + down.seconds, "acked": app.acknowledged,
                   "lost": len(lost), "rate": app.ops_per_second,
                   "exit": (0, 0)}  # run_mongrate stops the bench on a non-zero exit
            out["rows"].append(row)
            print(f"{rev}: upgrade+downgrade {row['alone']:.1f}s alone, {row['with']:.1f}s "
                  f"with writers ({row['with'] / row['alone']:.2f}x); writes acknowledged "
                  f"{row['acked']}, lost {row['lost']}, {row['rate']:,.0f}/s "
                  f"({row['rate'] / out['idle']:.0%} of idle); exit {row['exit']}", flush=True)
            for line in lost[:5]:
                print(f"  lost: {line}")
    client.drop_database(name)
    return out


def report(results: list[dict]) -> bool:
    print("\nsize     revision   acked  lost  exit     app/s  vs idle  alone   with  ratio")
    checks = []
    for r in results:
        for row in r["rows"]:
            share = row["rate"] / r["idle"]
            ratio = row["with"] / row["alone"]
            print(f"{r['messages']:>7,} {row['rev']:<10} {row['acked']:>6} {row['lost']:>5} "
                  f"{row['exit']!s:<8} {row['rate']:>6,.0f} {share:>7.0%} {row['alone']:>6.1f}s "
                  f"{row['with']:>5.1f}s {ratio:>5.2f}x")
            tag = f"{r['messages']:,} {row['rev']}"
            checks += [
                (f"{tag}: lost writes = {row['lost']} (target {TARGET_LOST})",
                 row["lost"] == TARGET_LOST),
                (f"{tag}: commands exit 0 ({row['exit']})", row["exit"] == (0, 0)),
                (f"{tag}: application keeps {share:.0%} of its idle throughput "
                 f"(>= {TARGET_THROUGHPUT:.0%})", share >= TARGET_THROUGHPUT),
                (f"{tag}: migration with writers {ratio:.2f}x its time alone "
                 f"(<= {TARGET_TIME:g}x)", ratio <= TARGET_TIME),
            ]
    return print_checks(checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server URL (default: $MONGRATE_TEST_URL, else a "
                                      "throwaway mongo-java-server)")
    parser.add_argument("--messages", type=int, default=100_000,
                        help="largest size; also runs 1/5 of it (default 100000)")
    parser.add_argument("--quick", action="store_true", help="2k and 10k messages")
    args = parser.parse_args()
    top = 10_000 if args.quick else args.messages
    sizes = [top // 5, top]

    def run(client, url: str) -> int:
        started = time.perf_counter()
        results = [run_size(client, url, n) for n in sizes]
        print(f"\n(total {time.perf_counter() - started:.0f}s)")
        return 0 if report(results) else 1

    return on_javaserver(args.url, run)


def on_javaserver(url: str | None, run) -> int:
    """``run(client, url)`` against ``url``, else $MONGRATE_TEST_URL, else a throwaway
    mongo-java-server (where mongrate writes in place, as on MongoDB)."""
    from contextlib import nullcontext

    from mongrate.testing.server import server_url

    with nullcontext(url) if url else server_url(server="javaserver") as where:
        client = MongoClient(where, tz_aware=False, socketTimeoutMS=3_600_000)
        try:
            return run(client, where)
        finally:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
