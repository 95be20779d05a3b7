"""schema.yaml loading, the diff and the rendered revision, without a server.

The rendered op calls are run against a model of the schema (an in-memory ``op`` that
applies each call to :class:`Schema` objects), so "applying the generated upgrade to the
live schema gives the declared one, and the downgrade gives the live one back" is checked
for every kind of change. The same revisions run on real servers in test_schema_server.py
and test_mongo7.py.
"""

from __future__ import annotations

import copy
import textwrap
from dataclasses import replace

import pytest

from mongrate.errors import SchemaError
from mongrate.schema.diff import compare
from mongrate.schema.introspect import collection_from_server, index_from_server
from mongrate.schema.loader import parse_schema
from mongrate.schema.model import Collection, Index, Schema, Validator
from mongrate.schema.render import render

BASE = """\
collections:
  chat_messages:
    indexes:
      - name: session_created
        keys: {session_id: 1, created_at: 1}
      - keys: [user_id, {created_at: -1}]
  file_uploads:
    indexes:
      - name: file_id_unique
        keys: file_id
        unique: true
"""


def schema(text: str) -> Schema:
    return parse_schema(textwrap.dedent(text), "schema.yaml")


# ------------------------------------------------------------------- loading
def test_index_key_forms_and_default_names():
    s = schema(BASE)
    msgs = s.collections["chat_messages"].indexes
    assert list(msgs) == ["session_created", "user_id_1_created_at_-1"]
    assert msgs["user_id_1_created_at_-1"].keys == (("user_id", 1), ("created_at", -1))
    up = s.collections["file_uploads"].indexes["file_id_unique"]
    assert up.keys == (("file_id", 1),) and up.unique and not up.sparse


def test_server_spellings_and_every_option_are_read():
    s = schema("""\
        collections:
          events:
            indexes:
              - keys: {at: 1}
                expireAfterSeconds: 60
                partialFilterExpression: {kind: {$eq: "tmp"}}
                collation: {locale: fr, strength: 1}
                sparse: true
                hidden: true
            validator:
              $jsonSchema: {bsonType: object, required: [at]}
              level: moderate
              action: warn
            options: {capped: true, size: 4096, max: 10}
        """)
    ev = s.collections["events"]
    ix = ev.indexes["at_1"]
    assert (ix.ttl, ix.partial, ix.collation, ix.sparse, ix.hidden) == (
        60, {"kind": {"$eq": "tmp"}}, {"locale": "fr", "strength": 1}, True, True)
    assert ev.validator == Validator({"$jsonSchema": {"bsonType": "object", "required": ["at"]}},
                                     "moderate", "warn")
    assert ev.options == {"capped": True, "size": 4096, "max": 10}


@pytest.mark.parametrize("text, where", [
    ("collections:\n  a:\n    indexes:\n      - keys: {x: 2}\n",
     "schema.yaml:4: collections.a.indexes[0].keys.x: direction must be"),
    ("collections:\n  a:\n    indexs: []\n",
     "schema.yaml:3: collections.a.indexs: unknown key"),
    ("collections:\n  a:\n    indexes:\n      - {keys: x, name: i}\n      - {keys: y, name: i}\n",
     "schema.yaml:5: collections.a.indexes[1].name: index name 'i' is used twice"),
    ("collections:\n  a:\n    indexes:\n      - keys: {x: 1, y: 1}\n        ttl: 5\n",
     "schema.yaml:5: collections.a.indexes[0].ttl: a TTL index has exactly one key"),
    ("collections:\n  a:\n    indexes:\n      - name: i\n",
     "schema.yaml:4: collections.a.indexes[0].keys: missing"),
    ("collections:\n  a:\n    validator: {level: strict}\n",
     "schema.yaml:3: collections.a.validator: has no rules"),
    ("collections:\n  a:\n    validator: {$jsonSchema: {}, action: explode}\n",
     "schema.yaml:3: collections.a.validator.action: must be one of"),
    ("collections:\n  a:\n    options: {capped: true}\n",
     "schema.yaml:3: collections.a.options.size: a capped collection needs a size"),
    ("collections:\n  a:\n    options: {size: big}\n",
     "schema.yaml:3: collections.a.options.size: must be a whole number"),
    ("collections:\n  a:\n    indexes:\n      - keys: x\n        unique: yes please\n",
     "schema.yaml:5: collections.a.indexes[0].unique: must be true or false"),
    ("collections:\n  a: {indexes: [{keys: x}]\n",
     "schema.yaml:3: not valid YAML: "),  # the wording is libyaml's or PyYAML's
    ("collections:\n  a: !!python/object:os.system {}\n",
     "schema.yaml:2: collections.a: the tag tag:yaml.org,2002:python/object:os.system is not "
     "allowed"),
    ("tables: {}\n", "schema.yaml:1: tables: unknown key"),
    ("", "schema.yaml: collections: the file is empty"),
    ("collections:\n  a: {}\n  a: {}\n", "schema.yaml:3: collections.a: given twice"),
])
def test_bad_files_name_file_line_and_key(text, where):
    with pytest.raises(SchemaError) as info:
        parse_schema(text, "schema.yaml")
    message = str(info.value)
    assert message.startswith(where), message
    assert "\n" not in message


def test_a_yaml_error_also_names_the_line_where_the_broken_part_began():
    with pytest.raises(SchemaError, match=r"\(while parsing a flow mapping on line 2\)$"):
        parse_schema("collections:\n  a: {indexes: [{keys: x}]\n", "schema.yaml")


# ---------------------------------------------------------------------- diff
def live_of(declared: Schema) -> Schema:
    return copy.deepcopy(declared)


def test_no_differences_when_equal_and_server_forms_compare_equal():
    declared = schema(BASE)
    # what listIndexes says for these: directions as doubles, the server's own fields
    server = collection_from_server(
        {"name": "chat_messages", "options": {}},
        [{"v": 2, "key": {"_id": 1}, "name": "_id_"},
         {"v": 2, "key": {"session_id": 1.0, "created_at": 1}, "name": "session_created"},
         {"v": 2, "key": {"user_id": 1, "created_at": -1.0}, "name": "user_id_1_created_at_-1",
          "background": True}])
    live = live_of(declared)
    live.collections["chat_messages"] = server
    assert not compare(declared, live)


def test_missing_extra_changed_renamed_indexes():
    declared = schema(BASE)
    live = live_of(declared)
    msgs = live.collections["chat_messages"].indexes
    msgs["by_user_time"] = replace(msgs.pop("user_id_1_created_at_-1"), name="by_user_time")
    del msgs["session_created"]  # dropped by hand
    msgs["stray"] = Index("stray", (("x", 1),))  # made by hand
    live.collections["file_uploads"].indexes["file_id_unique"] = Index("file_id_unique",
                                                                       (("file_id", 1),))
    lines = compare(declared, live).lines()
    assert lines == [
        "chat_messages: index stray is not in schema.yaml (extra)",
        "chat_messages: index user_id_1_created_at_-1 is named by_user_time in the database "
        "(same keys and options)",
        "chat_messages: index session_created missing (declared in schema.yaml)",
        "file_uploads: index file_id_unique changed: unique true in schema.yaml, false in the "
        "database",
    ]


def test_collation_and_capped_size_compare_as_the_server_reports_them():
    declared = schema("""\
        collections:
          logs:
            indexes: [{keys: name, collation: {locale: en, strength: 2}}]
            options: {capped: true, size: 1000}
        """)
    live = live_of(declared)
    logs = live.collections["logs"]
    logs.indexes["name_1"] = index_from_server(
        {"name": "name_1", "key": {"name": 1},
         "collation": {"locale": "en", "strength": 2, "caseLevel": False, "version": "57.1"}})
    logs.options = {"capped": True, "size": 1024}  # rounded up to 256 bytes by the server
    assert not compare(declared, live)
    logs.indexes["name_1"] = index_from_server(
        {"name": "name_1", "key": {"name": 1}, "collation": {"locale": "en", "strength": 3}})
    logs.options = {"capped": True, "size": 4096}
    assert compare(declared, live).lines() == [
        "logs: index name_1 changed: collation {'locale': 'en', 'strength': 2} in schema.yaml, "
        "{'locale': 'en', 'strength': 3} in the database",
        "logs: option size 1000 in schema.yaml, 4096 in the database (creation options cannot "
        "be changed in place)",
    ]


def test_text_index_fields_compare_whatever_their_order():
    declared = schema("collections:\n  a:\n    indexes: [{name: t, keys: {title: text, body: text}}]\n")
    live = live_of(declared)
    live.collections["a"].indexes["t"] = index_from_server(
        {"name": "t", "key": {"_fts": "text", "_ftsx": 1}, "weights": {"body": 1, "title": 1}})
    assert not compare(declared, live)


def test_missing_collection_hints_at_a_rename():
    declared = schema(BASE)
    live = live_of(declared)
    old = live.collections.pop("file_uploads")
    old.name = "uploads_old"
    diff = compare(declared, live, {"uploads_old": old, "other": Collection("other")})
    assert diff.lines() == [
        "file_uploads: collection missing (declared in schema.yaml) (is it uploads_old, renamed?)",
        "file_uploads: index file_id_unique missing (declared in schema.yaml)",
    ]


# -------------------------------------------------------------------- render
class ModelOp:
    """Applies the op calls of a rendered upgrade to a Schema (the shape the server would
    have afterwards), to check what the generated code does without a server."""

    def __init__(self, state: Schema):
        self.state = state
        self.calls: list[str] = []

    def require(self, *features: str) -> None:
        self.calls.append(f"require {features}")

    def create_collection(self, name, **options):
        self.calls.append(f"create_collection {name}")
        assert name not in self.state.collections
        validator = Validator(options.pop("validator", {}), options.pop("validationLevel", "strict"),
                              options.pop("validationAction", "error"))
        self.state.collections[name] = Collection(name, validator=validator, options=options)

    def create_index(self, coll, keys, *, name, **options):
        self.calls.append(f"create_index {coll}.{name}")
        indexes = self.state.collections[coll].indexes
        assert name not in indexes
        assert all(tuple(keys) != ix.keys or ix.collation for ix in indexes.values()), \
            "an index on the same keys must be dropped first"
        indexes[name] = index_from_server({"name": name, "key": dict(keys), **options})

    def drop_index(self, coll, name):
        self.calls.append(f"drop_index {coll}.{name}")
        del self.state.collections[coll].indexes[name]

    def set_validator(self, coll, validator, *, level="strict", action="error"):
        self.calls.append(f"set_validator {coll}")
        self.state.collections[coll].validator = Validator(validator or {}, level, action)

    def restore_undo(self):
        self.calls.append("restore_undo")


def module_of(declared: Schema, live: Schema) -> dict:
    body = render(compare(declared, live))
    source = (body.imports_text() + "\n\ndef upgrade(op):\n    " + body.text("upgrade")
              + "\n\n\ndef downgrade(op):\n    " + body.text("downgrade") + "\n")
    namespace: dict = {}
    exec(compile(source, "<revision>", "exec"), namespace)
    namespace["source"] = source
    return namespace


def round_trip(declared: Schema, live: Schema) -> dict:
    """Upgrade the live model and compare it with declared; the downgrade is restore_undo()
    (what it reverses on a real server is tested in test_schema_server.py)."""
    module = module_of(declared, live)
    state = copy.deepcopy(live)
    up = ModelOp(state)
    module["upgrade"](up)
    assert not compare(declared, state), compare(declared, state).lines()
    down = ModelOp(state)
    module["downgrade"](down)
    assert down.calls == ["restore_undo"]
    module["up_calls"] = up.calls
    return module


def test_generated_revision_round_trips_every_kind_of_change():
    declared = schema("""\
        collections:
          chat_messages:
            indexes:
              - name: session_created
                keys: {session_id: 1, created_at: 1}
              - name: user_time
                keys: {user_id: 1, created_at: -1}
              - name: by_kind
                keys: {kind: 1}
                unique: true
            validator:
              $jsonSchema: {bsonType: object, required: [session_id]}
              level: moderate
          events:
            indexes:
              - {name: expire, keys: {at: 1}, ttl: 3600}
              - {name: tmp, keys: {kind: 1}, partial: {tmp: true}}
            validator: {$jsonSchema: {bsonType: object}}
            options: {capped: true, size: 8192}
        """)
    live = Schema(collections={"chat_messages": Collection("chat_messages", indexes={
        "by_user": Index("by_user", (("user_id", 1), ("created_at", -1))),       # renamed
        "by_kind": Index("by_kind", (("kind", 1),)),                             # not unique
        "stray": Index("stray", (("x", 1),)),                                    # extra
    })})
    module = round_trip(declared, live)
    assert module["up_calls"] == [
        "require ('partial_indexes', 'ttl_indexes', 'validators')",
        "drop_index chat_messages.stray",
        "drop_index chat_messages.by_kind", "create_index chat_messages.by_kind",
        "drop_index chat_messages.by_user", "create_index chat_messages.user_time",
        "create_index chat_messages.session_created",
        "set_validator chat_messages",
        "create_collection events", "create_index events.expire", "create_index events.tmp",
    ]
    source = module["source"]
    down = source[source.index("def downgrade"):].splitlines()
    assert down[1:] == [
        "    # restore_undo() reverses exactly what upgrade() did, newest first:",
        "    #   events: index tmp dropped, if upgrade() built it",
        "    #   events: index expire dropped, if upgrade() built it",
        "    #   events: dropped, if upgrade() created it",
        "    #   chat_messages: validator put back as it was (none)",
        "    #   chat_messages: index session_created dropped, if upgrade() built it",
        "    #   chat_messages: index user_time dropped, by_user built again as it was",
        "    #   chat_messages: index by_kind dropped, by_kind built again as it was",
        "    #   chat_messages: index stray built again as it was",
        "    op.restore_undo()",
    ]
    source = module["source"]
    assert "# by_user has the keys and options of user_time: a rename" in source
    assert "# by_kind changed (unique true in schema.yaml, false in the database)" in source
    assert "# fails if chat_messages already holds duplicate kind values" in source
    assert max(len(line) for line in source.splitlines()) <= 100


def test_long_validators_are_laid_out_one_item_a_line_and_dates_imported():
    declared = schema("""\
        collections:
          a:
            validator:
              $jsonSchema:
                bsonType: object
                required: [session_id, user_id]
                properties: {f0: {bsonType: string}, f1: {bsonType: string}, f2: {bsonType: int}}
              created_at: {$gte: 2024-01-31}
        """)
    live = Schema(collections={"a": Collection("a", validator=Validator({"x": 1}, "moderate"))})
    source = round_trip(declared, live)["source"]
    assert source.startswith("import datetime\n")
    assert '        "created_at": {"$gte": datetime.date(2024, 1, 31)},' in source
    assert '            "required": ["session_id", "user_id"],' in source
    assert "#   a: validator put back as it was ({x} level moderate, action error)" in source
    assert max(len(line) for line in source.splitlines()) <= 100


def test_option_changes_are_comments_and_nothing_else():
    declared = schema("collections:\n  a:\n    options: {capped: true, size: 4096}\n")
    live = Schema(collections={"a": Collection("a")})
    body = render(compare(declared, live))
    code = [ln for ln in body.upgrade if not ln.startswith("#")]
    assert code == [] and body.downgrade == ["op.restore_undo()"]
    assert any("option capped true in schema.yaml, absent in the database" in ln
               for ln in body.upgrade)
