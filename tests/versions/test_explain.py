"""The app's history and file queries use the indexes the index revision creates.

MongoDB reports index use (winningPlan IXSCAN with the index name): checked on mongo:7
through the ``mongo7_url`` fixture (skipped where no Docker engine answers). FerretDB's
SQLite backend plans queries itself and shows no index use, so there the test asserts what
it can: the indexes exist with the right keys and options, and explain runs for every query.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pymongo import MongoClient

from app_patch.testdata.seed import seed
from mongrate.config import database_from_url
from tests.versions.conftest import CHAIN, INDEXES, revision_module, run_revision

NO_EXPLAIN = pytest.mark.skip_server(
    "javaserver", reason="mongo-java-server has no explain command")



def app_queries(db) -> list[tuple[str, dict, list | None, str]]:
    """(collection, filter, sort, index expected) for the queries app_patch sends."""
    msg = db.chat_messages.find_one({"role": "user"})
    row = db.file_uploads.find_one({})
    s, u = msg["session_id"], msg["user_id"]
    return [
        ("chat_messages", {"session_id": s}, [("created_at", -1), ("_id", -1)],
         "session_created"),
        ("chat_messages", {"session_id": s, "has_files": True}, [("created_at", 1)],
         "session_files_created"),
        ("chat_messages", {"user_id": u, "has_files": True}, [("created_at", -1)],
         "user_files_created"),
        ("file_uploads", {"file_id": row["file_id"], "user_id": row["user_id"]}, None,
         "file_id_unique"),
        ("file_uploads", {"message_id": row["message_id"], "user_id": row["user_id"]}, None,
         "message_user"),
        ("file_uploads", {"session_id": s, "user_id": u}, [("uploaded_at", 1), ("_id", 1)],
         "session_user_uploaded"),
        ("fs.files", {"metadata.user_id": u, "metadata.session_id": s}, None,
         "metadata_user_session"),
        ("thumbnails.files", {"filename": f"{row['file_id']}_100_v1"}, None, "thumb_key"),
    ]


def explain(db, collection: str, filter: dict, sort: list | None) -> dict:
    command: dict[str, Any] = {"find": collection, "filter": filter}
    if sort:
        command["sort"] = dict(sort)
    result = db.command("explain", command, verbosity="queryPlanner")
    assert result.get("ok") == 1.0 and "queryPlanner" in result, result
    return result


def scanned_indexes(node: Any) -> set[str]:
    """Index names of every IXSCAN stage in a plan tree."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("stage") == "IXSCAN" and "indexName" in node:
            found.add(node["indexName"])
        for value in node.values():
            found |= scanned_indexes(value)
    elif isinstance(node, list):
        for value in node:
            found |= scanned_indexes(value)
    return found


def migrate(db) -> None:
    for rev in CHAIN:
        run_revision(db, rev)


@NO_EXPLAIN
def test_indexes_exist_and_explain_runs_on_ferretdb(mongo_db):
    seed(mongo_db, sessions=6, messages_per_session=6, uploads=12, seed=5)
    migrate(mongo_db)
    mongo_db["thumbnails.files"].insert_one({"filename": "x_100_v1", "length": 0})
    for collection, keys, name, options in revision_module(INDEXES).INDEXES:
        info = mongo_db[collection].index_information()[name]
        assert info["key"] == keys
        assert bool(info.get("unique")) == bool(options.get("unique"))
    for collection, filter, sort, name in app_queries(mongo_db):
        plan = explain(mongo_db, collection, filter, sort)["queryPlanner"]
        used = scanned_indexes(plan)
        assert not used or name in used, (collection, filter, plan)  # if it says, it is ours


def test_mongodb_winning_plans_scan_the_new_indexes(mongo7_url):
    client = MongoClient(mongo7_url, tz_aware=False)
    db = client[database_from_url(mongo7_url) or f"t_{uuid.uuid4().hex[:8]}"]
    try:
        seed(db, sessions=40, messages_per_session=10, uploads=80, seed=5, drop=True)
        migrate(db)
        for collection, filter, sort, name in app_queries(db):
            plan = explain(db, collection, filter, sort)["queryPlanner"]["winningPlan"]
            assert name in scanned_indexes(plan), (collection, filter, plan)
        run_revision(db, INDEXES, "downgrade")
        plan = explain(db, "chat_messages", {"session_id": "x"}, None)["queryPlanner"]
        assert "session_created" not in scanned_indexes(plan["winningPlan"])
    finally:
        client.drop_database(db.name)
        client.close()


@NO_EXPLAIN
def test_explain_helper_sees_no_index_on_a_collection_scan(mongo_db):
    mongo_db.items.insert_many([{"n": i} for i in range(5)])
    plan = explain(mongo_db, "items", {"n": 3}, None)["queryPlanner"]
    assert scanned_indexes(plan) == set()
    assert scanned_indexes({"winningPlan": {"stage": "FETCH", "inputStage": {
        "stage": "IXSCAN", "indexName": "a_1"}}}) == {"a_1"}
