"""The test server is real: it stores, indexes and answers like MongoDB."""


def test_each_test_gets_its_own_database(mongo_db, mongo_url):
    assert mongo_url.endswith("/" + mongo_db.name)
    mongo_db.things.insert_many([{"n": i} for i in range(5)])
    assert mongo_db.things.count_documents({"n": {"$gte": 2}}) == 3
    assert mongo_db.list_collection_names() == ["things"]


def test_databases_do_not_leak(mongo_db):
    assert mongo_db.list_collection_names() == []
