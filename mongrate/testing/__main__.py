"""``python -m mongrate.testing build-ferretdb|serve DIR [PORT]``: used by the Makefile."""

import sys
import time

from mongrate.testing.server import FerretDBServer, ServerUnavailable, build_ferretdb


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["build-ferretdb"]:
            print(build_ferretdb())
            return 0
        if argv[:1] == ["serve"] and len(argv) >= 2:
            port = int(argv[2]) if len(argv) > 2 else None
            with FerretDBServer(argv[1], port=port) as srv:
                print(srv.url, flush=True)
                while True:
                    time.sleep(3600)
    except ServerUnavailable as exc:
        print(f"mongrate.testing: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print("usage: python -m mongrate.testing build-ferretdb | serve DIR [PORT]", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
