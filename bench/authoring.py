"""A user's first data revisions, written as the README shows, at three sizes.

Two revisions over ``chat_messages`` (default 50k, 100k and 200k messages), each timed as
a whole ``mongrate upgrade`` and ``mongrate downgrade`` command (child processes, own peak
RSS), on each test server (FerretDB 1.24, strategy rewrite, then mongo-java-server,
strategy in_place; ``--server`` picks one) unless ``--url`` names one:

- ``update_many``: the README's first helper,
  ``op.update_many("chat_messages", {"tags": {"$exists": False}}, {"$set": {"tags": []}})``
  (every message matches);
- ``change_each``: a per-document Python change that tidies ``file_ids``, sets
  ``has_files`` and drops a legacy field.

Reference, measured in the same run: the floor, one batched find into insert_many of
``chat_messages`` (the same bulk copy bench/migrate.py uses). Targets: each upgrade <= 3x
the floor, every downgrade restores the collection exactly, peak memory flat across sizes
(largest <= 1.25x smallest) and < 250 MB. Prints PASS/FAIL per target; exit 1 on a miss.
Also printed: the cost of the rewrite strategy's check that nothing wrote to the collection
during its pass (a checksum read of it before the swap), part of each rewrite above.

Run: .venv/bin/python bench/authoring.py [--url URL] [--server S] [--messages N] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from migrate import (  # noqa: E402
    BATCH,
    TARGET_VS_FLOOR,
    add_server_option,
    fingerprint,
    floor_copy,
    memory_checks,
    on_server,
    print_checks,
    run_mongrate,
)

from mongrate.config import with_database  # noqa: E402
from mongrate.mongo.collections import collection_checksum  # noqa: E402

REVISIONS = {
    "a1update": ('op.update_many("chat_messages", {"tags": {"$exists": False}}, '
                 '{"$set": {"tags": []}})'),
    "b2change": "op.change_each(\"chat_messages\", tidy)",
}
TIDY = '''
def tidy(msg):
    ids = msg.get("file_ids") if isinstance(msg.get("file_ids"), list) else []
    msg["file_ids"] = [str(i) for i in ids if i]
    msg["has_files"] = bool(msg["file_ids"])
    msg.pop("legacy", None)
'''


def write_project(tmp: Path, url: str) -> Path:
    versions = tmp / "versions"
    versions.mkdir()
    down = None
    for rev, body in REVISIONS.items():
        (versions / f"{rev}_r.py").write_text(
            f'"""{rev}\n\nRevision ID: {rev}\n"""\nrevision = {rev!r}\n'
            f"down_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n{TIDY}\n\n"
            f"def upgrade(op):\n    {body}\n\n\ndef downgrade(op):\n    op.restore_undo()\n")
        down = rev
    ini = tmp / "mongrate.ini"
    ini.write_text(f"[mongrate]\nurl = {url}\nscript_location = {versions}\n"
                   f"batch_size = {BATCH}\n")
    return ini


def seed_messages(db, n: int) -> None:
    """Messages shaped as CHAT_DATABASE.md describes them, some untidy."""
    rnd = random.Random(7)
    start = datetime(2026, 1, 1)
    words = "the image shows a chart of sales by region and quarter please explain".split()
    batch = []
    for i in range(n):
        doc = {"session_id": f"s{i // 20:06d}", "user_id": f"u{i % 97:03d}",
               "role": "user" if i % 2 == 0 else "assistant",
               "content": " ".join(rnd.choice(words) for _ in range(rnd.randint(20, 80))),
               "created_at": start + timedelta(seconds=i * 7)}
        kind = i % 5
        if kind == 0:
            doc["file_ids"] = [f"{rnd.getrandbits(96):024x}"]
        elif kind == 1:
            doc["file_ids"] = None
        elif kind == 2:
            doc["legacy"] = True
        batch.append(doc)
        if len(batch) == BATCH:
            db.chat_messages.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.chat_messages.insert_many(batch, ordered=False)


def run_size(client, url: str, messages: int) -> dict:
    name = f"bench_authoring_{messages}_{uuid.uuid4().hex[:6]}"
    db = client[name]
    print(f"\n== {messages:,} messages ==", flush=True)
    seed_messages(db, messages)
    out = {"messages": messages, "steps": {}}
    with tempfile.TemporaryDirectory(prefix="bench-authoring-") as tmp:
        ini = write_project(Path(tmp), with_database(url, name))
        out["floor"] = floor_copy(db, ("chat_messages",))
        print(f"floor (bulk copy of chat_messages): {out['floor']:.1f}s", flush=True)
        # what a rewrite pays to detect a write during its pass: one more read and checksum
        started = time.perf_counter()
        collection_checksum(db, "chat_messages", BATCH)
        out["detect"] = time.perf_counter() - started
        print(f"rewrite's check for writes during the pass (a checksum read): "
              f"{out['detect']:.1f}s ({out['detect'] / out['floor']:.2f} floors, included in "
              "each rewrite upgrade and downgrade below)", flush=True)
        for rev in REVISIONS:
            before = fingerprint(db)
            up = run_mongrate(ini, "upgrade", rev)
            down = run_mongrate(ini, "downgrade", "base" if rev == "a1update" else "a1update")
            exact = fingerprint(db) == before
            if rev == "a1update":
                run_mongrate(ini, "upgrade", rev)  # the second revision runs on top of it
            out["steps"][rev] = (up, down, exact)
            print(f"{rev}: upgrade {up.seconds:.1f}s ({up.seconds / out['floor']:.2f} floors, "
                  f"peak {up.peak_mb:.0f} MB), downgrade {down.seconds:.1f}s "
                  f"({down.seconds / out['floor']:.2f} floors), exact: {exact}", flush=True)
    client.drop_database(name)
    return out


def report(results: list[dict]) -> bool:
    print("\nsize      floor   revision    upgrade  vs floor  docs/s  downgrade  vs floor  "
          "peak MB")
    checks, peaks = [], []
    for r in results:
        for rev, (up, down, exact) in r["steps"].items():
            print(f"{r['messages']:>7,} {r['floor']:>7.1f}s  {rev:<10} {up.seconds:>7.1f}s "
                  f"{up.seconds / r['floor']:>8.2f}x {r['messages'] / up.seconds:>7,.0f} "
                  f"{down.seconds:>9.1f}s {down.seconds / r['floor']:>8.2f}x "
                  f"{max(up.peak_mb, down.peak_mb):>8.0f}")
            checks.append((f"{r['messages']:,} {rev}: upgrade <= {TARGET_VS_FLOOR:g}x the floor "
                           f"({up.seconds / r['floor']:.2f}x)",
                           up.seconds <= TARGET_VS_FLOOR * r["floor"],
                           f"{up.seconds / r['floor']:.2f}x floor ({up.seconds:.1f} s)",
                           f"floor {r['floor']:.1f} s", f"<= {TARGET_VS_FLOOR:g}x"))
            checks.append((f"{r['messages']:,} {rev}: downgrade restored the collection exactly",
                           exact))
            peaks.append(max(up.peak_mb, down.peak_mb))
    return print_checks(checks + memory_checks(peaks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server URL (default: a throwaway FerretDB)")
    parser.add_argument("--messages", type=int, default=200_000,
                        help="largest size; also runs 1/4 and 1/2 of it (default 200000)")
    parser.add_argument("--quick", action="store_true", help="2k, 4k and 8k messages")
    add_server_option(parser)
    args = parser.parse_args()
    top = 8_000 if args.quick else args.messages
    sizes = [top // 4, top // 2, top]

    def run(client, url: str) -> int:
        started = time.perf_counter()
        results = [run_size(client, url, n) for n in sizes]
        print(f"\n(total {time.perf_counter() - started:.0f}s)")
        return 0 if report(results) else 1

    return on_server(args.url, run, args.server)


if __name__ == "__main__":
    sys.exit(main())
