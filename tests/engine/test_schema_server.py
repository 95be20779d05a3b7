"""Declared schema on the real server (FerretDB 1.24): autogenerate, drift in check, and the
schema op helpers failing before any write where the server lacks a capability."""

from __future__ import annotations

import pytest

from mongrate.config import Config
from mongrate.errors import CapabilityError
from mongrate.testing.kit import revision_op

#: What FerretDB 1.x lacks; mongo-java-server has those indexes (tests/engine/test_mongo7.py)
FERRETDB_GAPS = pytest.mark.skip_server(
    "javaserver", reason="checks FerretDB 1.x's missing schema features; this server has "
                         "partial, TTL, sparse and collated indexes")


CFG = Config()

SCHEMA = """\
collections:
  accounts:
    indexes:
      - name: email_unique
        keys: {email: 1}
        unique: true
      - name: org_created
        keys: {org: 1, created_at: -1}
  audit:
    indexes:
      - keys: {at: -1}
"""


def indexes(db, name):
    return {n: {k: v for k, v in i.items() if k not in ("v", "ns")}
            for n, i in db[name].index_information().items()}


def user_collections(db):
    return sorted(n for n in db.list_collection_names() if not n.startswith("mongrate_"))


def generated(project):
    return sorted(p for p in project.versions.glob("*.py"))


@pytest.fixture
def declared(project):
    (project.path / "schema.yaml").write_text(SCHEMA)
    project.write_ini(schema="schema.yaml")
    return project


def test_autogenerate_from_nothing_round_trips(declared, mongo_db):
    p = declared
    r = p.run("check")
    assert r.code == 1 and "schema drift: accounts: collection missing" in r.err
    dry = p.run("revision", "--autogenerate", "-m", "accounts and audit", "--dry-run")
    assert dry.code == 0 and generated(p) == []
    assert 'op.create_index("accounts", [("email", 1)], name="email_unique", unique=True)' in dry.out
    assert "was not written" in dry.out
    r = p.run("revision", "--autogenerate", "-m", "accounts and audit", "--rev-id", "aaaa0001")
    assert r.code == 0, r.err
    (path,) = generated(p)
    text = path.read_text()
    # what a person would write: the collection before its indexes; the downgrade is
    # restore_undo(), saying what it will reverse
    assert text.index('op.create_collection("accounts")') < text.index('name="email_unique"')
    down = text[text.index("def downgrade"):]
    assert down.index("#   audit: index at_-1 dropped") < down.index("#   audit: dropped")
    assert down.rstrip().endswith("op.restore_undo()")
    assert p.run("upgrade", "head").code == 0
    assert p.run("check").code == 0
    assert set(indexes(mongo_db, "accounts")) == {"_id_", "email_unique", "org_created"}
    assert p.run("downgrade", "base").code == 0
    assert {"accounts", "audit"}.isdisjoint(mongo_db.list_collection_names())
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0
    assert p.run("upgrade", "head").code == 0
    r = p.run("check")
    assert r.code == 0 and "matches the declared schema" in r.out
    r = p.run("revision", "--autogenerate", "-m", "again")
    assert r.code == 0 and "no changes" in r.out and len(generated(p)) == 1


def test_rename_and_changed_index_on_existing_data(declared, mongo_db):
    p = declared
    mongo_db.accounts.insert_many([{"email": f"u{i}@x", "org": i % 3} for i in range(20)])
    mongo_db.accounts.create_index([("email", 1)], name="email_1")  # not unique yet
    mongo_db.accounts.create_index([("org", 1), ("created_at", -1)], name="by_org")  # old name
    mongo_db.accounts.create_index([("legacy", 1)], name="legacy_1")  # not declared
    mongo_db.audit.create_index([("at", -1)])
    before = indexes(mongo_db, "accounts")
    r = p.run("check")
    assert r.code == 1
    drift = [ln for ln in r.err.splitlines() if "schema drift: accounts" in ln]
    assert drift == [
        "mongrate: check: schema drift: accounts: index email_1 is not in schema.yaml (extra)",
        "mongrate: check: schema drift: accounts: index legacy_1 is not in schema.yaml (extra)",
        "mongrate: check: schema drift: accounts: index org_created is named by_org in the "
        "database (same keys and options)",
        "mongrate: check: schema drift: accounts: index email_unique missing (declared in "
        "schema.yaml)",
    ]
    assert p.run("revision", "--autogenerate", "-m", "tidy accounts").code == 0
    (path,) = generated(p)
    assert "# by_org has the keys and options of org_created: a rename" in path.read_text()
    assert p.run("upgrade", "head").code == 0, p.run("upgrade", "head").err
    assert p.run("check").code == 0
    assert p.run("downgrade", "base").code == 0
    assert indexes(mongo_db, "accounts") == before
    assert p.run("upgrade", "head").code == 0
    assert p.run("check").code == 0


def test_check_and_autogenerate_refuse_a_bad_file_with_one_line(declared, mongo_db):
    (declared.path / "schema.yaml").write_text(
        "collections:\n  accounts:\n    indexes:\n      - keys: {email: up}\n")
    for args in (("check",), ("revision", "--autogenerate", "-m", "x")):
        r = declared.run(*args)
        assert r.code == 2, r
        assert r.err.strip().splitlines() == [
            f"mongrate: error: {declared.path / 'schema.yaml'}:4: "
            "collections.accounts.indexes[0].keys.email: direction must be 1, -1, hashed, text, "
            "2d, 2dsphere, not 'up'"]
    assert generated(declared) == [] and mongo_db.list_collection_names() == []


def test_autogenerate_wants_the_database_at_head(declared, mongo_db):
    declared.add("aaaa1111", None)
    r = declared.run("revision", "--autogenerate", "-m", "x")
    assert r.code == 2 and "1 revision(s) behind (aaaa1111)" in r.err
    assert len(r.err.strip().splitlines()) == 1 and len(generated(declared)) == 1


# -------------------------------------------------------------- capabilities
@pytest.mark.parametrize("call, feature", [
    (lambda op: op.set_validator("items", {"$jsonSchema": {"bsonType": "object"}}),
     "collection validators"),
    (lambda op: op.create_index("items", [("at", 1)], name="ttl", expireAfterSeconds=60),
     "TTL indexes"),
    (lambda op: op.create_index("items", [("a", 1)], name="p",
                                partialFilterExpression={"a": {"$gt": 1}}), "partial indexes"),
    (lambda op: op.create_index("items", [("a", 1)], name="s", sparse=True), "sparse indexes"),
    (lambda op: op.create_index("items", [("a", 1)], name="c", collation={"locale": "fr"}),
     "collations"),
    (lambda op: op.create_collection("fresh", validator={"$jsonSchema": {}}),
     "collection validators"),
    (lambda op: op.require("validators", "ttl_indexes"), "collection validators"),
])
@FERRETDB_GAPS
def test_ferretdb_lacks_these_and_nothing_is_written(mongo_db, call, feature):
    mongo_db.items.insert_one({"a": 1})
    before = (user_collections(mongo_db), indexes(mongo_db, "items"))
    with pytest.raises(CapabilityError) as info, revision_op(mongo_db, "r1") as op:
        call(op)
    message = str(info.value)
    assert feature in message and "FerretDB" in message and "nothing was written" in message
    assert "\n" not in message
    assert (user_collections(mongo_db), indexes(mongo_db, "items")) == before
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0


@FERRETDB_GAPS
def test_a_generated_ttl_index_stops_the_upgrade_before_any_write(project, mongo_db):
    (project.path / "schema.yaml").write_text(
        "collections:\n  sessions:\n    indexes:\n      - {keys: {user: 1}}\n"
        "      - {name: expire, keys: {seen_at: 1}, ttl: 3600}\n")
    project.write_ini(schema="schema.yaml")
    r = project.run("revision", "--autogenerate", "-m", "expiring sessions")
    assert r.code == 0 and "lacks TTL indexes" in r.err
    r = project.run("upgrade", "head")
    assert r.code == 1
    assert "needs TTL indexes (expireAfterSeconds), which this server (FerretDB" in r.err
    assert "sessions" not in mongo_db.list_collection_names()
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0
    assert mongo_db[CFG.version_collection].count_documents({}) == 0


def test_schema_helpers_reverse_exactly_through_restore_undo(mongo_db):
    mongo_db.items.insert_one({"a": 1})
    mongo_db.items.create_index([("a", 1)], name="a_old")
    before = (user_collections(mongo_db), indexes(mongo_db, "items"))
    mongo_db.create_collection("gone")
    mongo_db.gone.create_index([("k", -1)], name="k_desc")
    with revision_op(mongo_db, "r1") as op:
        # the same name dropped and built again on other keys: restore must undo newest first
        assert op.drop_index("items", "a_old") is True
        assert op.create_index("items", [("b", 1)], name="a_old") is True
        assert op.create_collection("empty_one") is True
        assert op.create_collection("empty_one") is False  # re-run
        assert op.drop_collection("gone") is True
        with pytest.raises(Exception, match="holds 1 documents"):
            op.drop_collection("items")
        with pytest.raises(Exception, match="exists with other options"):
            op.create_collection("items", capped=True, size=4096)
    assert "empty_one" in user_collections(mongo_db) and "gone" not in user_collections(mongo_db)
    with revision_op(mongo_db, "r1", "downgrade") as op:
        assert op.restore_undo() == 4  # two index records, two collection records
    assert (user_collections(mongo_db), indexes(mongo_db, "items")) == (
        sorted(before[0] + ["gone"]), before[1])
    assert indexes(mongo_db, "gone")["k_desc"]["key"] == [("k", -1)]
    assert mongo_db[CFG.undo_collection].count_documents({}) == 0
