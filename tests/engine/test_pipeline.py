"""Reads overlapped with writes: order, errors, cancellation; op.parallel on the real server."""

from __future__ import annotations

import threading
import time

import pytest

from mongrate.errors import StepCancelled
from mongrate.mongo.collections import copy_collection
from mongrate.mongo.pipeline import BackgroundWriter, chunked, prefetch, read_ahead
from mongrate.testing.kit import revision_op


def make_op(db, batch_size=2):
    with revision_op(db, "r1", batch_size=batch_size) as op:
        return op


def test_writer_runs_calls_in_submission_order_off_the_calling_thread():
    seen, threads = [], set()

    def write(i):
        time.sleep(0.001 * (i % 3))  # uneven durations must not reorder anything
        seen.append(i)
        threads.add(threading.get_ident())

    w = BackgroundWriter(depth=2)
    for i in range(30):
        w.submit(write, i)
    w.drain()
    w.close()
    assert seen == list(range(30))
    assert threads and threading.get_ident() not in threads


def test_writer_error_surfaces_and_later_calls_are_skipped():
    seen = []

    def write(i):
        if i == 3:
            raise ValueError("disk full")
        seen.append(i)

    w = BackgroundWriter(depth=1)
    with pytest.raises(ValueError, match="disk full"):
        for i in range(50):
            w.submit(write, i)
        w.drain()
    w.close()
    assert seen == [0, 1, 2]


def test_writer_guard_stops_writes_after_the_lock_is_lost():
    seen, lost = [], threading.Event()

    def guard():
        if lost.is_set():
            raise RuntimeError("lost the lock")

    w = BackgroundWriter(guard=guard)
    w.submit(seen.append, 1)
    w.drain()
    lost.set()
    w.submit(seen.append, 2)
    with pytest.raises(RuntimeError, match="lost the lock"):
        w.drain()
    w.close()
    assert seen == [1]


def test_writer_close_with_cancel_drops_queued_calls():
    seen, gate = [], threading.Event()
    w = BackgroundWriter(depth=3)
    w.submit(gate.wait)  # the worker is busy with this one
    for i in range(3):
        w.submit(seen.append, i)
    closer = threading.Thread(target=w.close, kwargs={"cancel": True})
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(5)
    assert not closer.is_alive()
    assert seen == []
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(seen.append, 9)


def test_prefetch_yields_everything_in_order_and_raises_source_errors():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(read_ahead(range(10), 3)) == list(range(10))

    def broken():
        yield 1
        raise OSError("connection reset")

    got = []
    with pytest.raises(OSError, match="connection reset"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def new_threads(before: set) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def test_prefetch_closed_early_stops_its_worker():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = set(threading.enumerate())
    gen = prefetch(endless(), depth=2)
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    workers = new_threads(before)
    assert [t.name for t in workers] == ["mongrate-prefetch"]
    gen.close()
    workers[0].join(2)
    assert not workers[0].is_alive()
    assert len(produced) <= 5 + 2 + 1  # what was asked for, the queue, one in hand


def test_copy_collection_overlapped_is_complete_and_checksummed(mongo_db):
    mongo_db.src.insert_many([{"i": i, "pad": "x" * (i % 50)} for i in range(257)])
    count, checksum = copy_collection(mongo_db, "src", "dst", batch_size=10)
    assert count == 257 == mongo_db.dst.count_documents({})
    assert sorted(d["i"] for d in mongo_db.dst.find()) == list(range(257))
    from mongrate.mongo.collections import collection_checksum

    assert collection_checksum(mongo_db, "dst", 7) == (257, checksum)


def test_parallel_returns_results_in_order(mongo_db):
    mongo_db.a.insert_many([{"i": i} for i in range(20)])
    mongo_db.b.insert_many([{"i": i} for i in range(7)])
    op = make_op(mongo_db)

    def total(name):
        return sum(d["i"] for batch in op.batches(mongo_db[name].find(), name) for d in batch)

    assert op.parallel(lambda: total("a"), lambda: total("b")) == [190, 21]
    assert op.parallel() == []


def test_parallel_failure_stops_the_other_step_and_raises_the_first_error(mongo_db):
    mongo_db.big.insert_many([{"i": i} for i in range(400)])
    op = make_op(mongo_db, batch_size=1)
    read = []

    def slow_reader():
        for batch in op.progress(chunked(mongo_db.big.find(), 1), 400, "big"):
            read.extend(batch)
            time.sleep(0.005)
        return len(read)

    def failing():
        time.sleep(0.05)
        raise ValueError("bad row in file_uploads")

    with pytest.raises(ValueError, match="bad row"):
        op.parallel(slow_reader, failing)
    assert 0 < len(read) < 400  # stopped at a batch boundary, long before the end
    # the stop applies to that call only: the next steps run normally
    assert op.parallel(lambda: sum(1 for _ in op.progress(range(5)))) == [5]
    with pytest.raises(StepCancelled):
        op._engine.stop.set()
        list(op.progress(range(3)))


def test_prefetch_starts_at_once_and_a_dropped_one_stops():
    import gc

    started = threading.Event()

    def source():
        started.set()
        yield from range(1000)

    before = set(threading.enumerate())
    it = prefetch(source(), depth=2)
    assert started.wait(2)  # reading began before anyone asked for an item
    (worker,) = new_threads(before)
    del it  # never read: the finalizer must stop the worker blocked on its full queue
    gc.collect()
    worker.join(2)
    assert not worker.is_alive()


def test_writer_drain_does_not_hang_on_a_write_queued_behind_close():
    w = BackgroundWriter()
    w.close()
    w._queue.put((print, (), {}))  # what a racing submit() could leave behind
    with pytest.raises(RuntimeError, match="still queued"):
        w.drain()


def test_dry_run_database_records_writes_from_every_path(mongo_db):
    from mongrate.mongo.dryrun import RecordingDatabase
    from mongrate.testing.kit import snapshot

    mongo_db.chat_messages.insert_many([{"n": i} for i in range(7)])
    rec = RecordingDatabase(mongo_db)
    before = snapshot(mongo_db)
    rec["chat_messages"].database["other"].insert_one({"x": 1})
    rec.client[mongo_db.name]["other"].insert_one({"x": 2})
    rec.create_collection("fresh").insert_one({"x": 3})
    rec["chat_messages"].with_options().update_many({}, {"$set": {"x": 4}})
    rec["chat_messages"].aggregate([{"$match": {}}, {"$out": "copied"}])
    assert rec["chat_messages"].count_documents({}) == 7  # reads still reach the server
    assert rec.command("ping")["ok"] == 1.0
    assert snapshot(mongo_db) == before
    assert [w["method"] for w in rec.writes] == [
        "insert_one", "insert_one", "create_collection", "insert_one", "update_many", "aggregate"]
