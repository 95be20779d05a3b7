"""The server going away in the middle of a run: one line, exit 4, and the next run resumes."""

from __future__ import annotations

import time

from pymongo import MongoClient

from mongrate.testing.server import FerretDBServer

STEPS = """
for i in range(100):
    op.db["items"].update_one({"_id": i}, {"$set": {"done": True}}, upsert=True)
    time.sleep(0.05)
"""


def test_server_lost_mid_run_says_so_and_the_next_upgrade_resumes(project, tmp_path):
    server = FerretDBServer(tmp_path / "ferretdb").start()
    # the URL's own timeout is honoured, so losing the server is noticed within a second
    url = f"mongodb://127.0.0.1:{server.port}/lost?serverSelectionTimeoutMS=700"
    project.write_ini(url=url)
    project.add("aaaa1111", None)
    project.add("bbbb2222", "aaaa1111", body_up=STEPS)
    project.add("cccc3333", "bbbb2222")
    client = MongoClient(url)
    try:
        child = project.spawn("upgrade", "head")
        deadline = time.monotonic() + 30
        while not client.lost.items.find_one({"_id": 3}):
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.05)
        server.stop()
        out, err = child.communicate(timeout=60)
        assert child.returncode == 4, err
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err and "Topology" not in err
        assert last.startswith("mongrate: error: lost the server at mongodb://127.0.0.1:")
        assert str(server.port) in last and "'upgrade head'" in last
        assert "left 'started' in the log" in last and "resumes it" in last

        server.start()  # same data, same port
        r = project.run("current")
        assert r.code == 0 and "aaaa1111" in r.out
        assert "upgrade of bbbb2222" in r.out
        r = project.run("upgrade", "head")  # waits out the dead run's 3 s lease, then resumes
        assert r.code == 0, r.err
        assert "resuming it" in r.err and "now at cccc3333" in r.out
        assert client.lost.items.count_documents({"done": True}) == 100
        assert client.lost.mongrate_log.count_documents({"status": "started"}) == 0
    finally:
        client.close()
        server.stop()
