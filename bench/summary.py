"""Run every benchmark and end with one table: figure, reference, target, PASS/FAIL.

Each bench stays runnable alone (``python bench/graph.py``) and prints its own report;
here its output is shown as it comes, and the ``BENCH-RESULT`` lines it prints
(``bench/results.py``) are collected into the closing table. A bench that printed none
gets one row from its exit status. ``make bench`` runs this; ``--only graph fleet`` runs
some; arguments after ``--`` go to every bench, ``--args 'migrate=--server ferretdb'`` to
one. Exit 1 if any target was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from results import PREFIX, load

HERE = Path(__file__).resolve().parent
ORDER = ("graph", "graph_scale", "thumbs", "history", "thumbs_http", "migrate", "authoring", "schema_check",
         "fleet", "abuse")


def run_one(name: str, extra: list[str]) -> list[dict]:
    """Run ``bench/<name>.py``, echoing its output; its result rows."""
    print(f"\n===== bench/{name}.py ({load()}) =====", flush=True)
    started = time.perf_counter()
    rows: list[dict] = []
    proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(PREFIX):
            try:
                rows.append(json.loads(line[len(PREFIX):]))
            except ValueError:
                print(line, end="")
            continue
        print(line, end="", flush=True)
    code = proc.wait()
    took = time.perf_counter() - started
    if not rows or (code and all(r.get("passed") is not False for r in rows)):
        # no rows, or it stopped before reporting a miss: the exit status says it
        rows.append({"bench": name, "what": "(whole bench)", "figure": f"exit {code}",
                     "reference": "-", "target": "exit 0", "passed": code == 0,
                     "load": load()})
    print(f"----- bench/{name}.py: exit {code} after {took:.0f}s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    header = ("bench", "what", "figure", "reference", "target", "result")
    cells = [(r["bench"], r["what"], r["figure"], r["reference"], r["target"],
              {True: "PASS", False: "FAIL", None: "info"}[r.get("passed")]) for r in rows]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(v).ljust(w) for v, w in zip(c, widths, strict=True)).rstrip()
            for c in cells]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=ORDER, help="these benches only")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="arguments for one bench, e.g. --args 'migrate=--server ferretdb'")
    parser.add_argument("extra", nargs="*", help="after --: arguments for every bench")
    args = parser.parse_args()
    own: dict[str, list[str]] = {}
    for item in args.args:
        name, _, given = item.partition("=")
        if name not in ORDER:
            parser.error(f"--args {item!r}: no bench named {name!r} (one of {', '.join(ORDER)})")
        own.setdefault(name, []).extend(shlex.split(given))
    rows: list[dict] = []
    for name in args.only or ORDER:
        rows += run_one(name, [*args.extra, *own.get(name, [])])
    cores = os.cpu_count() or 1
    print(f"\n===== summary ({cores} cores, {load()} at the end; each figure's reference "
          "was measured in the same run) =====")
    print(table(rows))
    failed = sum(r.get("passed") is False for r in rows)
    print(f"{len(rows)} rows: {sum(r.get('passed') is True for r in rows)} PASS, "
          f"{failed} FAIL, {sum(r.get('passed') is None for r in rows)} for information")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
