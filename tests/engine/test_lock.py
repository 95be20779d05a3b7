"""The lease lock under real contention: several clients released by one barrier."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from pymongo import MongoClient

from mongrate.config import Config
from mongrate.errors import LockLostError
from mongrate.progress import Reporter
from mongrate.runtime.lock import KEEP_LEASES, PRUNE_EVERY, Leases, Lock

N = 6


def race(stores: list[Leases]) -> list[object]:
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stores[i].try_acquire(30, "race")[0]
        except Exception as exc:  # noqa: BLE001 - any error is a failed trial
            results[i] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def stores(mongo_url, mongo_db):
    clients = [MongoClient(mongo_url) for _ in range(N)]
    yield [Leases(c[mongo_db.name], Config().lock_collection) for c in clients]
    for c in clients:
        c.close()


@pytest.mark.parametrize("state", ["missing", "released", "expired"])
def test_exactly_one_of_six_simultaneous_clients_wins(stores, mongo_db, state):
    """FerretDB runs find_one_and_update as read-then-write; only an insert on a unique
    key decides a race, so this failed with the conditional-upsert lock."""
    for _trial in range(15):
        mongo_db.mongrate_lock.delete_many({})
        if state != "missing":
            holder = stores[0]
            assert holder.try_acquire(30, "setup")[0]
            if state == "released":
                holder.release()
            else:
                mongo_db.mongrate_lock.update_one(
                    {"_id": holder.lease_id},
                    {"$set": {"expires_at": holder.now() - timedelta(seconds=1)}})
        results = race(stores)
        assert [r for r in results if not isinstance(r, bool)] == []
        assert sum(r is True for r in results) == 1
        for s in stores:
            s.release()


def test_live_lease_is_not_taken_and_expired_one_is(stores, mongo_db):
    a, b = stores[0], stores[1]
    assert a.try_acquire(30, "a")[0]
    assert b.try_acquire(30, "b") == (False, None)
    assert b.holder().owner == a.owner
    mongo_db.mongrate_lock.update_one({"_id": a.lease_id},
                                      {"$set": {"expires_at": a.now() - timedelta(seconds=1)}})
    acquired, took_over = b.try_acquire(30, "b")
    assert acquired and took_over.owner == a.owner
    assert a.renew(30) is False  # a later lease exists: a has lost the lock
    assert b.renew(30) is True


def test_force_release_only_touches_the_named_lease(stores):
    a, b = stores[0], stores[1]
    assert a.try_acquire(30, "a")[0]
    stale = a.holder()
    a.release()
    assert b.try_acquire(30, "b")[0]
    assert b.force_release(stale) is False  # unlock of the old holder spares the new lease
    assert b.holder().owner == b.owner


def test_heartbeat_keeps_the_lease_and_notices_a_takeover(stores, mongo_db):
    a, b = stores[0], stores[1]
    reporter = Reporter(quiet=True)
    with Lock(a, lease=1.5, timeout=5, command="a", reporter=reporter) as lock:
        time.sleep(2.5)  # longer than the lease: only renewals keep it alive
        assert b.try_acquire(1.5, "b") == (False, None)
        lock.check()
        mongo_db.mongrate_lock.update_one({"_id": a.lease_id},
                                          {"$set": {"expires_at": a.now() - timedelta(seconds=5)}})
        assert b.try_acquire(1.5, "b")[0]
        deadline = time.monotonic() + 30  # a hang guard, not a speed goal
        while not lock.heartbeat.lost.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(LockLostError):
            lock.check()


def test_server_clock_is_read_where_hello_is_unknown(stores):
    """Leases follow the server's clock; a server that answers only the legacy isMaster
    (mongo-java-server, MongoDB < 4.4.2) still gives it (it used to fail on 'hello')."""
    from mongrate.mongo.codec import utcnow

    assert abs(stores[0].now() - utcnow()) < timedelta(seconds=30)


def test_old_leases_are_pruned_every_few_acquisitions(stores, mongo_db):
    """Pruning is a write, so not on every acquisition; the history stays a few leases."""
    a, b = stores[0], stores[1]
    mongo_db.mongrate_lock.delete_many({})
    for _ in range(22):
        assert a.try_acquire(30, "up")[0]
        assert not b.try_acquire(30, "up")[0]  # still exclusive
        a.release()
        assert mongo_db.mongrate_lock.count_documents({}) <= KEEP_LEASES + PRUNE_EVERY
    assert mongo_db.mongrate_lock.count_documents({}) > KEEP_LEASES  # history is kept
