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


#: partial, TTL and collated indexes (on mongo:7 and mongo-java-server alike)
EVENT_INDEXES = """\
      - name: expire
        keys: {seen_at: 1}
        ttl: 3600
      - name: open_by_user
        keys: {user: 1}
        partial: {open: true}
      - name: name_ci
        keys: {name: 1}
        collation: {locale: en, strength: 2}
"""

MONGO7_SCHEMA = """\
collections:
  events:
    indexes:
""" + EVENT_INDEXES + """\
    validator:
      $jsonSchema: {bsonType: object, required: [user]}
      level: moderate
  audit:
    options: {capped: true, size: 65536}
    validator:
      $jsonSchema: {bsonType: object, required: [at]}
    indexes:
      - keys: {at: -1}
        sparse: true
"""


def test_autogenerate_validators_partial_ttl_collation_on_mongo7(mongo7_project):
    """What FerretDB 1.24 cannot do (validators, partial, TTL, sparse, collated indexes),
    generated, applied, checked and reversed on the reference server."""
    project, db = mongo7_project
    db.events.insert_many([{"user": i % 4, "open": i % 2 == 0, "name": f"N{i}"} for i in range(30)])
    (project.path / "schema.yaml").write_text(MONGO7_SCHEMA)
    project.write_ini(schema="schema.yaml")
    r = project.run("check")
    assert r.code == 1 and "schema drift: audit: collection missing" in r.err
    r = project.run("revision", "--autogenerate", "-m", "events rules and audit")
    assert r.code == 0, r.err
    (path,) = project.versions.glob("*.py")
    text = path.read_text()
    assert 'op.require("collation", "partial_indexes", "sparse_indexes", "ttl_indexes", ' \
           '"validators")' in text
    assert project.run("upgrade", "head").code == 0
    r = project.run("check")
    assert r.code == 0, r.err
    assert db.events.index_information()["expire"]["expireAfterSeconds"] == 3600
    with pytest.raises(Exception, match="Document failed validation"):
        db.audit.insert_one({"no_at": 1})
    assert project.run("downgrade", "base").code == 0
    assert "audit" not in db.list_collection_names()
    assert set(db.events.index_information()) == {"_id_"}
    assert not (db.command("listCollections", filter={"name": "events"})["cursor"]["firstBatch"][0]
                ["options"].get("validator"))
    assert project.run("upgrade", "head").code == 0
    assert project.run("check").code == 0


# -- the same checks on mongo-java-server, where they apply ------------------------------------
# It writes by _id through an index (the probe picks in_place, as on MongoDB) and takes
# partial, TTL, sparse and collated indexes; it has no explain, no collMod (so no
# validators) and no capped collections, so those parts stay with mongo:7.


@pytest.mark.mongo_servers("javaserver")
def test_upgrade_downgrade_round_trip_in_place(project, mongo_db):
    db = mongo_db
    db.items.insert_many([{"n": i, **({"x": i} if i % 2 else {})} for i in range(50)])
    before = list(db.items.find())
    project.add("aaaa1111", None, body_up='op.update_many("items", {}, {"$set": {"x": 0}})')
    project.add("bbbb2222", "aaaa1111",
                body_up='op.create_index("items", [("n", 1)], name="by_n", unique=True)')
    r = project.run("-v", "upgrade", "head")
    assert r.code == 0, r.err
    assert "write strategy: in_place (auto: single-document writes are indexed" in r.out + r.err
    assert db.items.index_information()["by_n"]["unique"] is True
    assert db.items.count_documents({"x": 0}) == 50
    assert project.run("downgrade", "base").code == 0
    assert DeepDiff(before, list(db.items.find())) == {}


INDEX_SCHEMA = """\
collections:
  events:
    indexes:
""" + EVENT_INDEXES + """\
      - name: by_at
        keys: {at: -1}
        sparse: true
"""


@pytest.mark.mongo_servers("javaserver")
def test_autogenerate_partial_ttl_sparse_collation_indexes(project, mongo_db):
    db = mongo_db
    db.events.insert_many([{"user": i % 4, "open": i % 2 == 0, "name": f"N{i}"} for i in range(30)])
    (project.path / "schema.yaml").write_text(INDEX_SCHEMA)
    project.write_ini(schema="schema.yaml")
    r = project.run("check")
    assert r.code == 1 and "schema drift" in r.err
    r = project.run("revision", "--autogenerate", "-m", "events indexes")
    assert r.code == 0, r.err
    (path,) = project.versions.glob("*.py")
    assert 'op.require("collation", "partial_indexes", "sparse_indexes", "ttl_indexes")' \
        in path.read_text()
    assert project.run("upgrade", "head").code == 0
    r = project.run("check")
    assert r.code == 0, r.err
    info = db.events.index_information()
    assert info["expire"]["expireAfterSeconds"] == 3600 and info["by_at"]["sparse"] is True
    assert project.run("downgrade", "base").code == 0
    assert set(db.events.index_information()) == {"_id_"}
    assert project.run("upgrade", "head").code == 0
    assert project.run("check").code == 0
