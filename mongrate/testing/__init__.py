"""Reusable test machinery: throwaway servers and a pytest plugin (``mongo_url``, ``mongo_db``)."""

from mongrate.testing.server import (
    SERVERS,
    FerretDBServer,
    JavaServer,
    ServerUnavailable,
    build_ferretdb,
    build_javaserver,
    docker_available,
    ferretdb_binary,
    free_port,
    javaserver_jar,
    make_server,
    server_url,
)

__all__ = [
    "SERVERS",
    "FerretDBServer",
    "JavaServer",
    "ServerUnavailable",
    "build_ferretdb",
    "build_javaserver",
    "docker_available",
    "ferretdb_binary",
    "free_port",
    "javaserver_jar",
    "make_server",
    "server_url",
]
