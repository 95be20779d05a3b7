"""Where `mongrate upgrade head` of the image revisions spends its server time, by command
and collection, against the floor (bench/migrate.py's bulk copy) measured in the same run.

A diagnostic beside bench/migrate.py, not a target: one size, one throwaway FerretDB (or
``--url``), the command run in this process with a pymongo command listener summing each
command's duration (the time from sending it to its answer, as the driver sees it). The
pass writes in a background thread, so the durations add up to more than the wall time.

Run: .venv/bin/python bench/migrate_profile.py [--messages 50000] [--top 25] [--url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from migrate import BATCH, PER_SESSION, floor_copy  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402

from app_patch.testdata.seed import seed  # noqa: E402
from mongrate.config import with_database  # noqa: E402
from mongrate.testing.server import FerretDBServer  # noqa: E402


class Durations(monitoring.CommandListener):
    """Seconds and count per (command, collection) of every client made after it is
    registered."""

    def __init__(self) -> None:
        self.seconds: Counter[tuple[str, str]] = Counter()
        self.count: Counter[tuple[str, str]] = Counter()
        self._open: dict[tuple, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get("collection") if name == "getMore" else \
            event.command.get(name)
        self._open[(event.connection_id, event.request_id)] = (
            name, target if isinstance(target, str) else "")

    def succeeded(self, event) -> None:
        key = self._open.pop((event.connection_id, event.request_id), None)
        if key is not None:
            with self._lock:
                self.seconds[key] += event.duration_micros / 1e6
                self.count[key] += 1

    failed = succeeded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--url", help="a server of your own (a throwaway database is made)")
    args = parser.parse_args()
    with (nullcontext(None) if args.url else FerretDBServer()) as server:
        url = args.url or server.url
        client = MongoClient(url)
        name = f"bench_profile_{args.messages}"
        client.drop_database(name)
        db = client[name]
        seed(db, sessions=max(1, args.messages // PER_SESSION),
             messages_per_session=PER_SESSION, uploads=max(1, args.messages // 10), seed=1)
        floor = floor_copy(db)
        print(f"{args.messages:,} messages; floor (bulk copy) {floor:.1f} s", flush=True)
        durations = Durations()
        monitoring.register(durations)  # the command's client is made after this
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            ini = Path(tmp) / "mongrate.ini"
            ini.write_text(f"[mongrate]\nurl = {with_database(url, name)}\n"
                           f"script_location = {ROOT / 'versions'}\n"
                           f"prepend_sys_path = {ROOT}\nbatch_size = {BATCH}\n")
            from mongrate.cli import main as mongrate

            started = time.perf_counter()
            try:
                code = mongrate(["-c", str(ini), "upgrade", "head"])
            except SystemExit as exc:
                code = exc.code
            took = time.perf_counter() - started
        print(f"upgrade head: exit {code}, {took:.1f} s = {took / floor:.2f} floors")
        print(f"{'seconds':>8} {'floors':>7} {'calls':>6}  command, collection")
        for key, seconds in durations.seconds.most_common(args.top):
            print(f"{seconds:8.2f} {seconds / floor:7.2f} {durations.count[key]:6d}  "
                  f"{key[0]}, {key[1]}")
        total = sum(durations.seconds.values())
        print(f"{total:8.2f} {total / floor:7.2f} {sum(durations.count.values()):6d}  "
              "all commands")
        client.drop_database(name)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
