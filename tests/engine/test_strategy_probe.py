"""The write-strategy probe on a server it has to time (not FerretDB 1.x, known by buildInfo)."""

from __future__ import annotations

import time

import pytest
from pymongo import MongoClient, monitoring

from mongrate.operations.strategy import IN_PLACE, PROBE_PREFIX, PROBE_WRITES, choose

NOT_PROBED = pytest.mark.skip_server(
    "ferretdb", reason="FerretDB 1.x is known by its buildInfo to need rewrite: no probe runs")


class Stalls(monitoring.CommandListener):
    """Delays the first ``n`` timed updates of the large probe collection, as a busy
    machine does now and then (the warm-up update is left alone)."""

    def __init__(self, n: int, seconds: float):
        self.left, self.seconds, self.seen = n, seconds, 0

    def started(self, event):
        if event.command_name == "update" and str(event.command.get("update", "")).endswith(
                "_4000"):
            self.seen += 1
            if self.seen > 1 and self.left > 0:  # after the warm-up
                self.left -= 1
                time.sleep(self.seconds)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@NOT_PROBED
def test_probe_picks_in_place_for_indexed_writes_even_when_most_writes_stall(mongo_url):
    """More than half of the timed writes delayed by 0.2 s used to flip a median to rewrite
    (the versions' round trip then compared a swapped run with an in-place one); only the
    fastest write shows what the server does, so the probe takes that."""
    stalls = Stalls(PROBE_WRITES // 2 + 1, 0.2)
    client = MongoClient(mongo_url, event_listeners=[stalls])
    try:
        db = client.get_default_database()
        strategy = choose(db)
        assert stalls.left == 0  # the stalls happened
        assert strategy.name == IN_PLACE, strategy.reason
        assert not [n for n in db.list_collection_names() if n.startswith(PROBE_PREFIX)]
    finally:
        client.close()
