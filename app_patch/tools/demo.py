"""``make demo``: the image-rendering rollout told with the mongrate CLI.

Starts FerretDB with its data under ``.mongrate/demo-db`` (kept between runs), seeds the
pre-change chat database on the first run, then runs ``upgrade head``, ``current``,
``history``, ``downgrade -1`` and ``upgrade head``, printing each command and its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mongrate.testing.server import FerretDBServer, ServerUnavailable

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".mongrate" / "demo-db"
PORT = int(os.environ.get("MONGRATE_DEMO_PORT", "27027"))
DATABASE = "flowise_proxy"


def sh(args: list[str], url: str) -> int:
    shown = " ".join(args)
    print(f"\n$ {shown}", flush=True)
    env = dict(os.environ, MONGRATE_URL=url, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env)
    if proc.returncode != 0:
        print(f"demo: '{shown}' exited {proc.returncode}", file=sys.stderr)
    return proc.returncode


def main() -> int:
    try:
        server = FerretDBServer(DATA, port=PORT).start()
    except ServerUnavailable as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    url = f"mongodb://127.0.0.1:{PORT}/{DATABASE}"
    print(f"demo: FerretDB on 127.0.0.1:{PORT}, data in {DATA.relative_to(ROOT)}")
    try:
        from pymongo import MongoClient

        with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
            seeded = client[DATABASE].chat_messages.estimated_document_count() > 0
        steps: list[list[str]] = []
        if not seeded:
            steps.append(["app_patch.testdata.seed", "--url", url, "--sessions", "40",
                          "--messages-per-session", "25", "--uploads", "150", "--seed", "7"])
        steps += [
            ["mongrate", "upgrade", "head"],
            ["mongrate", "current"],
            ["mongrate", "history", "-i"],
            ["mongrate", "downgrade", "-1"],
            ["mongrate", "current"],
            ["mongrate", "upgrade", "head"],
            ["mongrate", "backup", "list"],
            ["mongrate", "check"],
        ]
        for step in steps:
            if sh(step, url) != 0:
                return 1
        print("\ndemo: done; the database stays in .mongrate/demo-db for the next run")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
