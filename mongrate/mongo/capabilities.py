"""What the server can do with schema: validators, partial/TTL/sparse/collated indexes.

FerretDB 1.x answers ``collMod`` with NotImplemented, rejects ``partialFilterExpression``,
``expireAfterSeconds`` and ``collation``, and accepts ``sparse`` but ignores it (the index
is reported without it). Validators are probed for real (``collMod`` on a collection
that does not exist writes nothing: MongoDB answers NamespaceNotFound); the index options
cannot be probed without creating something, so they follow the server's ``buildInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.database import Database
from pymongo.errors import OperationFailure

from mongrate.mongo.collections import build_info

_NOT_IMPLEMENTED = (238, 59, 115)  # NotImplemented, CommandNotFound, CommandNotSupported
_PROBE_COLLECTION = "mongrate_capability_probe_absent"

#: capability -> how an error message names it
FEATURES: dict[str, str] = {
    "validators": "collection validators (collMod / create with validator)",
    "partial_indexes": "partial indexes (partialFilterExpression)",
    "ttl_indexes": "TTL indexes (expireAfterSeconds)",
    "sparse_indexes": "sparse indexes",
    "collation": "collations",
    "special_indexes": "hashed, text and geospatial indexes",
    "collection_options": "collection options other than capped/size/max",
}


@dataclass(frozen=True)
class Capabilities:
    server: str
    missing: frozenset[str] = frozenset()

    def supports(self, feature: str) -> bool:
        return feature not in self.missing


def _server_name(info: dict) -> tuple[str, bool]:
    """('FerretDB 1.x' or 'MongoDB 7.0.4', is FerretDB 1.x)."""
    if "ferretdbVersion" not in info:
        return f"MongoDB {info.get('version', '?')}", False
    version = str(info["ferretdbVersion"]).lstrip("v")
    major = version.split(".")[0]
    v1 = not (major.isdigit() and int(major) >= 2)  # our test build says "unknown": a v1
    label = version if version[:1].isdigit() else "1.x"
    return f"FerretDB {label}", v1


def _collmod_works(db: Database) -> bool:
    try:
        db.command({"collMod": _PROBE_COLLECTION})
    except OperationFailure as exc:
        return exc.code not in _NOT_IMPLEMENTED
    return True


def probe(db: Database) -> Capabilities:
    """Ask the server (two read-only commands)."""
    real = getattr(db, "_db", db)  # a dry run's RecordingDatabase would only record collMod
    info = build_info(real.client)
    server, ferret_v1 = _server_name(info)
    missing: set[str] = set()
    if not _collmod_works(real):
        missing.add("validators")
    if ferret_v1:
        missing |= {"partial_indexes", "ttl_indexes", "sparse_indexes", "collation",
                    "special_indexes", "collection_options"}
    return Capabilities(server, frozenset(missing))


def index_needs(keys: list[tuple[str, object]], options: dict) -> list[str]:
    """The capabilities an index with ``keys`` and ``options`` needs."""
    needs = []
    if options.get("partialFilterExpression") is not None:
        needs.append("partial_indexes")
    if options.get("expireAfterSeconds") is not None:
        needs.append("ttl_indexes")
    if options.get("sparse"):
        needs.append("sparse_indexes")
    if options.get("collation"):
        needs.append("collation")
    if any(not isinstance(d, int) for _, d in keys):
        needs.append("special_indexes")
    return needs


#: creation options FerretDB 1.x takes (everything else needs "collection_options")
PLAIN_COLLECTION_OPTIONS = frozenset({"capped", "size", "max"})


def collection_needs(options: dict) -> list[str]:
    """The capabilities ``create_collection(**options)`` needs."""
    needs = []
    if options.get("validator") or "validationLevel" in options or "validationAction" in options:
        needs.append("validators")
    if options.get("collation"):
        needs.append("collation")
    other = set(options) - PLAIN_COLLECTION_OPTIONS - {
        "validator", "validationLevel", "validationAction", "collation"}
    if other:
        needs.append("collection_options")
    return needs
