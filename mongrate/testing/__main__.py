"""``python -m mongrate.testing build-ferretdb|build-javaserver|serve DIR [PORT] [SERVER]``:
used by the Makefile. SERVER is ``ferretdb`` (default) or ``javaserver``."""

import sys
import time

from mongrate.testing.server import (
    SERVERS,
    ServerUnavailable,
    build_ferretdb,
    build_javaserver,
    make_server,
)

USAGE = ("usage: python -m mongrate.testing build-ferretdb | build-javaserver | "
         f"serve DIR [PORT] [{'|'.join(SERVERS)}]")


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["build-ferretdb"]:
            print(build_ferretdb())
            return 0
        if argv[:1] == ["build-javaserver"]:
            print(build_javaserver())
            return 0
        if argv[:1] == ["serve"] and 2 <= len(argv) <= 4:
            port = int(argv[2]) if len(argv) > 2 else None
            name = argv[3] if len(argv) > 3 else "ferretdb"
            if name not in SERVERS:
                print(f"mongrate.testing: unknown server {name!r}; {USAGE}", file=sys.stderr)
                return 2
            with make_server(name, argv[1], port=port) as srv:
                print(srv.url, flush=True)
                while True:
                    time.sleep(3600)
    except ServerUnavailable as exc:
        print(f"mongrate.testing: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(USAGE, file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
