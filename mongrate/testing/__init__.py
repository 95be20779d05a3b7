"""Reusable test machinery: throwaway servers and a pytest plugin (``mongo_url``, ``mongo_db``)."""

from mongrate.testing.server import (
    FerretDBServer,
    ServerUnavailable,
    build_ferretdb,
    docker_available,
    ferretdb_binary,
    free_port,
)

__all__ = [
    "FerretDBServer",
    "ServerUnavailable",
    "build_ferretdb",
    "docker_available",
    "ferretdb_binary",
    "free_port",
]
