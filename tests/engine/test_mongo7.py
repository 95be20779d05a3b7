"""The same engine story on a real MongoDB 7 (testcontainers), where a Docker engine answers.

FerretDB v1 lacks transactions and index-backed explain; MongoDB has them, so this is where
the lock, the undo log and the index helpers meet the reference server.
"""

from __future__ import annotations

import pytest
from deepdiff import DeepDiff
from pymongo import MongoClient

from mongrate.config import with_database


@pytest.fixture
def mongo7_project(project, mongo7_url):
    url = with_database(mongo7_url, project.url.rsplit("/", 1)[1])
    project.url = url
    project.write_ini()
    client = MongoClient(url)
    yield project, client.get_default_database()
    client.drop_database(client.get_default_database().name)
    client.close()


def test_upgrade_downgrade_round_trip_on_mongo7(mongo7_project):
    project, db = mongo7_project
    db.items.insert_many([{"n": i, **({"x": i} if i % 2 else {})} for i in range(50)])
    before = list(db.items.find())
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 0}})')
    project.add("bbbb2222", "aaaa1111",
                body_up='op.create_index("items", [("n", 1)], name="by_n", unique=True)')
    assert project.run("upgrade", "head").code == 0
    plan = db.items.find({"n": 3}).explain()["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in str(plan)
    assert project.run("downgrade", "base").code == 0
    assert DeepDiff(before, list(db.items.find())) == {}
