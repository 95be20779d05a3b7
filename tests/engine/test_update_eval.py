"""mongrate.mongo.update (parse, evaluate): MongoDB's update semantics applied client-side.

Unit cases per operator, static validation, and a differential test that applies seeded
random updates both here and on the real servers (FerretDB 1.24 and mongo-java-server 1.47)
and compares BSON bytes. Where a server departs from MongoDB's manual, the case is skipped
by a listed deviation, each one shown to be real on its server.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import bson
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure

from mongrate.errors import UnsupportedUpdate, UpdateError
from mongrate.mongo.codec import EXACT
from mongrate.mongo.update.parse import apply_update, compile_update, validate_update
from tests.engine.conftest import uuid_binary

# -- unit cases ----------------------------------------------------------------------------------

T0 = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000)


def check(doc: dict, update: dict, expected: dict) -> dict:
    """apply_update gives exactly ``expected`` (BSON bytes, so types and field order) and
    leaves ``doc`` untouched."""
    before = bson.encode(doc)
    result = apply_update(doc, update, now=T0)
    assert bson.encode(doc) == before, "the input document was mutated"
    assert result is not doc
    assert bson.encode(result) == bson.encode(expected), result
    return result


def fails(doc: dict, update: dict, match: str) -> None:
    with pytest.raises(UpdateError, match=match):
        apply_update(doc, update, now=T0)


def unsupported(doc: dict, update: object) -> None:
    with pytest.raises(UnsupportedUpdate):
        apply_update(doc, update, now=T0)  # type: ignore[arg-type]


def test_set_replaces_in_place_appends_new_fields_and_creates_parents():
    check({"_id": 1, "a": 1, "b": {"c": 1}}, {"$set": {"a": "x", "z": 1, "b.d.e": 2}},
          {"_id": 1, "a": "x", "b": {"c": 1, "d": {"e": 2}}, "z": 1})


def test_new_fields_are_created_in_path_order_across_operators():
    # One tree for all operators, children in lexicographic order, numeric names numerically.
    check({"_id": 1}, {"$set": {"b": 1, "x.10": 1}, "$inc": {"a": 1, "x.9": 1, "x.b": 1}},
          {"_id": 1, "a": 1, "b": 1, "x": {"9": 1, "10": 1, "b": 1}})
    check({"_id": 1, "a": {"z": 0}}, {"$set": {"a.y": 1, "a.b": 2}, "$unset": {"a.z": 1}},
          {"_id": 1, "a": {"b": 2, "y": 1}})


def test_array_paths_index_and_extend_with_nulls():
    check({"_id": 1, "a": [1, 2]}, {"$set": {"a.1": 9, "a.4": 5, "a.6.b": 1}},
          {"_id": 1, "a": [1, 9, None, None, 5, None, {"b": 1}]})
    check({"_id": 1, "a": {"0": 1}}, {"$set": {"a.0": 2, "a.1": 3}}, {"_id": 1, "a": {"0": 2, "1": 3}})
    check({"_id": 1, "a": [{"b": 1}]}, {"$inc": {"a.0.b": 1}}, {"_id": 1, "a": [{"b": 2}]})


@pytest.mark.parametrize("doc, path", [
    ({"a": 5}, "a.b"), ({"a": None}, "a.b"), ({"a": [1]}, "a.b"), ({"a": [1, 2]}, "a.1.b"),
])
def test_creating_a_path_through_a_scalar_or_array_is_an_error(doc, path):
    fails(dict(doc, _id=1), {"$set": {path: 1}}, "Cannot create field")
    check(dict(doc, _id=1), {"$unset": {path: 1}}, dict(doc, _id=1))  # $unset: a no-op
    fails(dict(doc, _id=1), {"$pop": {path: 1}}, "Cannot")  # not viable


def test_padding_limit_and_two_names_for_one_element():
    fails({"_id": 1, "a": []}, {"$set": {"a.1500001": 1}}, "backfill")
    assert len(apply_update({"_id": 1, "a": []}, {"$set": {"a.1500000": 1}})["a"]) == 1500001
    fails({"_id": 1, "a": []}, {"$set": {"a.99999999999999999999": 1}}, "backfill")
    # "a.1" and "a.01" are one element of an array (but two fields of a document)
    unsupported({"_id": 1, "a": [1, 2]}, {"$set": {"a.01": 7, "a.1": 8}})
    check({"_id": 1, "a": {"1": 2}}, {"$set": {"a.01": 7, "a.1": 8}},
          {"_id": 1, "a": {"1": 8, "01": 7}})


# -- MongoDB's rules, from its source (mongodb/mongo, src/mongo/...) ---------------------------


def test_array_indexes_with_leading_zeros_are_numbers():
    # str::parseUnsignedBase10Integer (util/str.cpp), used by UpdateObjectNode's getChild:
    # ASCII digits, leading zeros allowed. MongoDB turns {x: [true, -1]} with
    # {$set: {"x.0000010": d, "x.0000": false}} into [false, -1, null x 8, d].
    check({"_id": 1, "x": [True, -1]}, {"$set": {"x.0000010": T0, "x.0000": False}},
          {"_id": 1, "x": [False, -1] + [None] * 8 + [T0]})
    check({"_id": 1, "a": [1, 2]}, {"$set": {"a.01": 9}, "$unset": {"a.00": 1}},
          {"_id": 1, "a": [None, 9]})
    check({"_id": 1, "a": [{"b": 1}]}, {"$inc": {"a.00.b": 1}}, {"_id": 1, "a": [{"b": 2}]})
    # on a document "01" is just a name
    check({"_id": 1, "a": {"1": 1}}, {"$set": {"a.01": 2}}, {"_id": 1, "a": {"1": 1, "01": 2}})


@pytest.mark.parametrize("name", ["²", "٣", "１", "1²", "①"])
def test_only_ascii_digits_make_a_number(name):
    # ctype::isDigit is ASCII '0'-'9': other Unicode digits are plain names
    check({"_id": 1, "a": [1]}, {"$unset": {f"a.{name}": 1}}, {"_id": 1, "a": [1]})
    fails({"_id": 1, "a": [1]}, {"$set": {f"a.{name}": 1}}, "Cannot create field")
    check({"_id": 1}, {"$set": {name: 1, "2": 1}}, {"_id": 1, "2": 1, name: 1})


def test_new_fields_order_numbers_only_against_numbers():
    # pathsupport::cmpPathsAndArrayIndexes (db/update/path_support.h): numeric order when
    # both names are plain numbers (no leading zero), bytewise otherwise
    check({"_id": 1}, {"$set": {"9": 1, "!": 1, "01": 1, "10": 1, "0": 1, "a": 1}},
          {"_id": 1, "!": 1, "0": 1, "01": 1, "9": 1, "10": 1, "a": 1})


@pytest.mark.parametrize("current, update", [
    (-0.0, {"$inc": {"x": 0}}),
    (-0.0, {"$inc": {"x": 0.0}}),
    (0.0, {"$mul": {"x": -1}}),
    (0.0, {"$mul": {"x": -1.0}}),
    (Decimal128("1.0"), {"$inc": {"x": Decimal128("0.00")}}),
    (Decimal128("1.0"), {"$mul": {"x": Decimal128("1.00")}}),
    (Decimal128("0"), {"$mul": {"x": -1}}),
    (5, {"$bit": {"x": {"or": 1}}}),
])
def test_arithmetic_keeps_a_numerically_identical_value(current, update):
    # ArithmeticNode/BitNode: no-op when SafeNum::isIdentical(new, old): same type and ==
    # (doubles: -0.0 == 0.0; Decimal128: isEqual, so 1.0 == 1.00)
    doc = {"_id": 1, "x": current}
    assert compile_update(update).apply(doc) is doc
    check(doc, update, doc)


@pytest.mark.parametrize("current, update, expected", [
    (5, {"$inc": {"x": Int64(0)}}, Int64(5)),  # int32 -> int64: another type, written
    (5, {"$mul": {"x": 1.0}}, 5.0),
    (Int64(5), {"$inc": {"x": 0.0}}, 5.0),
    (2, {"$inc": {"x": Decimal128("0")}}, Decimal128("2")),
    (float("nan"), {"$inc": {"x": 1}}, float("nan")),  # NaN is never identical
])
def test_arithmetic_that_changes_the_type_is_written(current, update, expected):
    result = check({"_id": 1, "x": current}, update, {"_id": 1, "x": expected})
    assert result["x"] is not current


def test_unset_removes_fields_and_nulls_array_elements():
    check({"_id": 1, "a": 1, "b": [1, 2], "c": {"d": 1, "e": 2}},
          {"$unset": {"a": "", "b.0": 1, "c.d": True, "zz": 1, "b.7": 1}},
          {"_id": 1, "b": [None, 2], "c": {"e": 2}})


def test_no_op_returns_an_equal_document_and_shares_untouched_values():
    doc = {"_id": 1, "a": 1, "b": {"c": [1, 2], "f": [2]}, "d": {"e": 1}, "g": [3],
           "when": DatetimeMS(2**62)}
    update = {"$set": {"a": 1, "b.c": [1, 2]}, "$unset": {"missing": 1}, "$min": {"d.e": 1.0},
              "$addToSet": {"b.f": 2}, "$pull": {"g": 7}, "$setOnInsert": {"q": 1}}
    result = check(doc, update, doc)
    assert compile_update(update).apply(doc) is doc  # the engine can skip unchanged documents
    changed = apply_update(doc, {"$set": {"b.x": 1}})
    assert changed["d"] is doc["d"] and changed["b"] is not doc["b"]
    assert changed["b"]["c"] is doc["b"]["c"]
    assert result["when"] == DatetimeMS(2**62)


def test_updates_that_differ_only_in_bson_type_are_not_confused():
    # apply_update caches parsed updates; 1 and 1.0 must stay distinct.
    assert bson.encode(apply_update({"_id": 1, "a": 1}, {"$inc": {"a": 1}})) == \
        bson.encode({"_id": 1, "a": 2})
    assert bson.encode(apply_update({"_id": 1, "a": 1}, {"$inc": {"a": 1.0}})) == \
        bson.encode({"_id": 1, "a": 2.0})


def test_values_from_the_update_are_copied():
    value = {"x": [1]}
    result = apply_update({"_id": 1}, {"$set": {"a": value}, "$push": {"b": value}})
    result["a"]["x"].append(2)
    result["b"][0]["x"].append(3)
    assert value == {"x": [1]}


@pytest.mark.parametrize("current, operand, expected", [
    (1, 2, 3),
    (2**31 - 1, 1, Int64(2**31)),  # int32 overflow widens to int64
    (-(2**31), -1, Int64(-(2**31) - 1)),
    (Int64(5), 1, Int64(6)),
    (5, Int64(1), Int64(6)),
    (1, 0.5, 1.5),
    (Int64(2**53 + 1), 1.0, float(2**53)),  # the int64 is rounded to a double first
    (Decimal128("1.10"), 2, Decimal128("3.10")),
    (3, Decimal128("0.25"), Decimal128("3.25")),
    (Decimal128("9999999999999999999999999999999999"), 1, Decimal128("1.000000000000000000000000000000000E+34")),
])
def test_inc_type_promotion(current, operand, expected):
    check({"_id": 1, "n": current}, {"$inc": {"n": operand}}, {"_id": 1, "n": expected})


@pytest.mark.parametrize("current, operand, expected", [
    (2, 3, 6), (2**30, 4, Int64(2**32)), (Int64(3), 2, Int64(6)), (3, 0.5, 1.5),
    (Decimal128("1.5"), 2, Decimal128("3.0")),
])
def test_mul_type_promotion(current, operand, expected):
    check({"_id": 1, "n": current}, {"$mul": {"n": operand}}, {"_id": 1, "n": expected})


def test_arithmetic_on_missing_fields_and_errors():
    check({"_id": 1}, {"$inc": {"a": 5, "b": 2**40}, "$mul": {"c": 3, "d": Int64(3), "e": -2.5,
                                                             "f": Decimal128("-2.5")}},
          {"_id": 1, "a": 5, "b": Int64(2**40), "c": 0, "d": Int64(0), "e": -0.0,
           "f": Decimal128("-0.0")})
    fails({"_id": 1, "n": Int64(2**63 - 1)}, {"$inc": {"n": 1}}, "Failed to apply \\$inc")
    fails({"_id": 1, "n": Int64(2**62)}, {"$mul": {"n": 2}}, "Failed to apply \\$mul")
    fails({"_id": 1, "n": "1"}, {"$inc": {"n": 1}}, "non-numeric type string")
    fails({"_id": 1, "n": True}, {"$mul": {"n": 1}}, "non-numeric type bool")
    unsupported({"_id": 1, "n": Decimal128("1")}, {"$inc": {"n": 0.1}})
    unsupported({"_id": 1, "n": Decimal128("NaN")}, {"$inc": {"n": 1}})


def test_min_max_use_bson_order_across_types():
    ladder = [MinKey(), None, -1, 2.5, Int64(3), Decimal128("3.5"), "", "a", {}, {"a": 1}, [],
              [1], b"", Binary(b"a", 5), b"ab", ObjectId(b"\0" * 12), False, True, T0,
              Timestamp(1, 1), Regex("a", ""), Regex("a", "i"), MaxKey()]
    for low, high in zip(ladder, ladder[1:], strict=False):
        check({"_id": 1, "v": high}, {"$min": {"v": low}}, {"_id": 1, "v": low})
        check({"_id": 1, "v": low}, {"$min": {"v": high}}, {"_id": 1, "v": low})
        check({"_id": 1, "v": low}, {"$max": {"v": high}}, {"_id": 1, "v": high})


def test_min_max_equal_values_keep_the_stored_type_and_documents_compare_in_order():
    check({"_id": 1, "v": 1}, {"$min": {"v": 1.0}, "$max": {"w": 2}}, {"_id": 1, "v": 1, "w": 2})
    check({"_id": 1, "v": float("nan")}, {"$min": {"v": -1e308}}, {"_id": 1, "v": float("nan")})
    check({"_id": 1, "v": 2**53 + 1}, {"$max": {"v": float(2**53)}}, {"_id": 1, "v": 2**53 + 1})
    check({"_id": 1, "v": Decimal128("0.1")}, {"$max": {"v": 0.1}}, {"_id": 1, "v": 0.1})
    # Field by field: type, then name, then value.
    check({"_id": 1, "v": {"a": "x"}}, {"$max": {"v": {"b": 1}}}, {"_id": 1, "v": {"a": "x"}})
    check({"_id": 1, "v": {"a": 1}}, {"$max": {"v": {"b": 1}}}, {"_id": 1, "v": {"b": 1}})
    check({"_id": 1, "v": {"a": 1, "b": 1}}, {"$min": {"v": {"b": 1, "a": 1}}},
          {"_id": 1, "v": {"a": 1, "b": 1}})


def test_rename():
    check({"_id": 1, "a": 1, "b": 2}, {"$rename": {"a": "z"}}, {"_id": 1, "b": 2, "z": 1})
    check({"_id": 1, "a": 1, "b": 2, "c": 3}, {"$rename": {"c": "a"}}, {"_id": 1, "a": 3, "b": 2})
    check({"_id": 1, "a": {"b": 1}}, {"$rename": {"a.b": "c.d"}}, {"_id": 1, "a": {}, "c": {"d": 1}})
    check({"_id": 1}, {"$rename": {"a": "b"}}, {"_id": 1})
    # The rename acts at its destination's place in the tree: "b" is created before "z".
    check({"_id": 1, "a": 1}, {"$rename": {"a": "z"}, "$set": {"b": 1}}, {"_id": 1, "b": 1, "z": 1})
    fails({"_id": 1, "a": [{"b": 1}]}, {"$rename": {"a.0.b": "c"}}, "source field cannot be an array")
    fails({"_id": 1, "a": [{"b": 1}], "c": 1}, {"$rename": {"c": "a.0.d"}},
          "destination field cannot be an array")
    fails({"_id": 1, "a": 5}, {"$rename": {"a.b": "c"}}, "cannot use the part")
    fails({"_id": 1, "c": 1, "a": 5}, {"$rename": {"c": "a.b"}}, "Cannot create field")
    fails({"_id": 1, "x": 1}, {"$rename": {"x": "_id"}}, "immutable field '_id'")
    check({"_id": 1}, {"$rename": {"x": "_id"}}, {"_id": 1})


def test_current_date():
    ts = Timestamp(T0.replace(tzinfo=datetime.UTC), 1)
    check({"_id": 1, "a": 0}, {"$currentDate": {"a": True, "b.c": {"$type": "date"},
                                                 "t": {"$type": "timestamp"}}},
          {"_id": 1, "a": T0, "b": {"c": T0}, "t": ts})
    precise = datetime.datetime(2024, 5, 6, 7, 8, 9, 123999, tzinfo=datetime.UTC)
    assert apply_update({"_id": 1}, {"$currentDate": {"a": True}}, now=precise)["a"] == T0
    result = apply_update({"_id": 1}, {"$currentDate": {"a": True}})
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert result["a"].microsecond % 1000 == 0 and abs((now - result["a"]).total_seconds()) < 5


def test_set_on_insert_does_nothing_to_an_existing_document():
    check({"_id": 1, "a": 1}, {"$setOnInsert": {"a": 2, "b": 3}}, {"_id": 1, "a": 1})


def test_push_and_its_modifiers():
    doc = {"_id": 1, "a": [3, 1]}
    check(doc, {"$push": {"a": 2, "new": [1]}}, {"_id": 1, "a": [3, 1, 2], "new": [[1]]})
    for position, expected in [(0, [9, 8, 3, 1]), (1, [3, 9, 8, 1]), (-1, [3, 9, 8, 1]),
                               (-2, [9, 8, 3, 1]), (-9, [9, 8, 3, 1]), (2, [3, 1, 9, 8]),
                               (99, [3, 1, 9, 8])]:
        check(doc, {"$push": {"a": {"$each": [9, 8], "$position": position}}},
              {"_id": 1, "a": expected})
    check(doc, {"$push": {"a": {"$each": [2], "$position": 0, "$sort": 1, "$slice": 2}}},
          {"_id": 1, "a": [1, 2]})
    check(doc, {"$push": {"a": {"$each": [2], "$slice": -2}}}, {"_id": 1, "a": [1, 2]})
    check(doc, {"$push": {"a": {"$each": [], "$slice": 0}}}, {"_id": 1, "a": []})
    check(doc, {"$push": {"a": {"$each": ["x", None, 2.5], "$sort": -1}}},
          {"_id": 1, "a": ["x", 3, 2.5, 1, None]})
    check({"_id": 1}, {"$push": {"a": {"$each": []}}}, {"_id": 1, "a": []})
    fails({"_id": 1, "a": 1}, {"$push": {"a": 2}}, "must be an array")


def test_push_sort_by_fields():
    items = [{"a": 2, "k": 1}, {"b": 1}, 5, {"a": {"b": 0}}, {"a": 1, "k": 2}, {"a": 1, "k": 1}]
    check({"_id": 1, "x": items}, {"$push": {"x": {"$each": [], "$sort": {"a": 1, "k": -1}}}},
          {"_id": 1, "x": [{"b": 1}, 5, {"a": 1, "k": 2}, {"a": 1, "k": 1}, {"a": 2, "k": 1},
                           {"a": {"b": 0}}]})
    check({"_id": 1, "x": [{"a": {"b": 2}}, {"a": [{"b": 0}]}, {"a": {"b": 1}}]},
          {"$push": {"x": {"$each": [], "$sort": {"a.b": 1}}}},
          {"_id": 1, "x": [{"a": [{"b": 0}]}, {"a": {"b": 1}}, {"a": {"b": 2}}]})


def test_push_sort_ties_are_only_modelled_where_the_server_sort_is_stable():
    small = [1, 1.0, Int64(1)] * 5  # 15 elements: insertion sort, stable
    check({"_id": 1, "a": small}, {"$push": {"a": {"$each": [0], "$sort": 1}}},
          {"_id": 1, "a": [0] + small})
    unsupported({"_id": 1, "a": small + [1.0]}, {"$push": {"a": {"$each": [0], "$sort": 1}}})
    same = list(range(20))
    check({"_id": 1, "a": same[::-1]}, {"$push": {"a": {"$each": [], "$sort": 1}}},
          {"_id": 1, "a": same})


def test_add_to_set_compares_numbers_by_value_and_documents_in_order():
    check({"_id": 1, "a": [1, {"x": 1, "y": 2}]},
          {"$addToSet": {"a": {"$each": [1.0, Int64(1), 2, 2.0, {"y": 2, "x": 1}, {"x": 1, "y": 2}]}}},
          {"_id": 1, "a": [1, {"x": 1, "y": 2}, 2, {"y": 2, "x": 1}]})
    check({"_id": 1}, {"$addToSet": {"a": {"$each": [3, 3.0]}, "b": [1]}},
          {"_id": 1, "a": [3], "b": [[1]]})
    fails({"_id": 1, "a": {}}, {"$addToSet": {"a": 1}}, "non-array field")


def test_pop():
    check({"_id": 1, "a": [1, 2, 3], "b": [1, 2], "c": []},
          {"$pop": {"a": 1, "b": -1, "c": 1, "d": 1}}, {"_id": 1, "a": [1, 2], "b": [2], "c": []})
    fails({"_id": 1, "a": "s"}, {"$pop": {"a": 1}}, "non-array")


def test_pull_and_pull_all():
    doc = {"_id": 1, "a": [1, 1.0, 2, [1, 2], [2, 1], {"x": 1}, {"x": 1, "y": 2}, {"y": 2, "x": 1}]}
    check(doc, {"$pullAll": {"a": [1, [2, 1]]}},
          {"_id": 1, "a": [2, [1, 2], {"x": 1}, {"x": 1, "y": 2}, {"y": 2, "x": 1}]})
    check(doc, {"$pull": {"a": [1, 2]}}, dict(doc, a=[x for x in doc["a"] if x != [1, 2]]))
    check({"_id": 1, "a": [{"x": 1}, {"x": 2}, {"y": 1}, 1]}, {"$pull": {"a": {"x": 1}}},
          {"_id": 1, "a": [{"x": 2}, {"y": 1}, 1]})
    check({"_id": 1, "a": [{"x": 1, "y": 2}, 3]}, {"$pull": {"a": {"y": 2, "x": 1}}},
          {"_id": 1, "a": [3]})
    # The server would also remove {x: 1, y: 2}; the manual says only exact documents.
    unsupported(doc, {"$pull": {"a": {"x": 1}}})
    unsupported(doc, {"$pull": {"a": {"$gt": 1}}})
    unsupported(doc, {"$pull": {"a": Regex("^a")}})
    fails({"_id": 1, "a": 1}, {"$pull": {"a": 1}}, "non-array")


def test_bit():
    check({"_id": 1, "a": 12, "b": Int64(12), "c": -1},
          {"$bit": {"a": {"and": 10, "or": 1}, "b": {"xor": 5}, "c": {"and": Int64(7)}, "d": {"or": 3}}},
          {"_id": 1, "a": 9, "b": Int64(9), "c": Int64(7), "d": 3})
    fails({"_id": 1, "a": 1.0}, {"$bit": {"a": {"and": 1}}}, "non-integral")


def test_all_positional():
    check({"_id": 1, "a": [{"b": 1}, {}]}, {"$set": {"a.$[].b": 1}}, {"_id": 1, "a": [{"b": 1}, {"b": 1}]})
    check({"_id": 1, "a": [[1, 2], [3]]}, {"$inc": {"a.$[].$[]": 10}}, {"_id": 1, "a": [[11, 12], [13]]})
    check({"_id": 1, "a": [1, 2], "b": []}, {"$unset": {"a.$[]": 1}, "$set": {"b.$[]": 1}},
          {"_id": 1, "a": [None, None], "b": []})
    fails({"_id": 1}, {"$set": {"a.$[]": 1}}, "must exist in the document")
    fails({"_id": 1}, {"$setOnInsert": {"a.$[]": 1}}, "must exist in the document")
    fails({"_id": 1, "a": {}}, {"$set": {"a.$[]": 1}}, "non-array element")
    fails({"_id": 1, "a": [1]}, {"$set": {"a.$[].b": 1}}, "Cannot create field")


def test_id_is_immutable():
    check({"_id": 1, "a": 1}, {"$set": {"_id": 1}}, {"_id": 1, "a": 1})
    check({"_id": 1, "a": 1}, {"$inc": {"_id": 0}, "$max": {"a": 0}}, {"_id": 1, "a": 1})
    fails({"_id": 1}, {"$set": {"_id": 1.0}}, "immutable field '_id'")
    fails({"_id": 1}, {"$set": {"_id": 2}}, "immutable field '_id'")
    fails({"_id": {"a": 1}}, {"$set": {"_id.b": 1}}, "immutable field '_id'")
    check({"_id": {"a": 1}}, {"$set": {"_id.a": 1}}, {"_id": {"a": 1}})
    fails({"_id": {"a": [1]}}, {"$push": {"_id.a": {"$each": [], "$sort": 1}}}, "immutable")


def test_unmodelled_updates_are_unsupported():
    doc = {"_id": 1, "a": [1]}
    for update in ([{"$set": {"a": 1}}], {"$set": {"a.$": 1}}, {"$set": {"a.$[i]": 1}},
                   {"$set": {"$x": 1}}, {"$set": {"a": {"$x": 1}}}, {"$set": {"a": object()}},
                   {"$set": {"a": bson.DBRef("c", 1)}}, {"$currentDate": {"a": False}},
                   {"$set": {"a": 2**64}}):
        with pytest.raises(UnsupportedUpdate):
            validate_update(update)  # type: ignore[arg-type]
        unsupported(doc, update)
    deep: object = 1
    for _ in range(99):
        deep = {"d": deep}
    unsupported(doc, {"$set": {"a": deep}})


# -- static validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("update, match", [
    ({}, "update cannot be empty"),
    ({"a": 1}, "Unknown modifier: a"),
    ({"$set": {"a": 1}, "b": 1}, "Unknown modifier: b"),
    ({"$foo": {"a": 1}}, "Unknown modifier: \\$foo"),
    ({"$set": 1}, "Modifiers operate on fields"),
    ({"$set": {"": 1}}, "An empty update path is not valid"),
    ({"$set": {"a..b": 1}}, "contains an empty field name"),
    ({"$unset": {"a.": 1}}, "contains an empty field name"),
    ({"$set": {"$[]": 1}}, "first position"),
    ({"$set": {"a": 1, "a.b": 1}}, "Updating the path 'a.b' would create a conflict at 'a'"),
    ({"$set": {"a.b": 1}, "$unset": {"a": 1}}, "would create a conflict at 'a'"),
    ({"$set": {"a": 1}, "$inc": {"a": 1}}, "would create a conflict at 'a'"),
    ({"$setOnInsert": {"a": 1}, "$set": {"a": 2}}, "conflict"),
    ({"$rename": {"a": "b"}, "$set": {"b.c": 1}}, "conflict"),
    ({"$rename": {"a": "b"}, "$unset": {"a": 1}}, "conflict"),
    ({"$rename": {"a": "c", "b": "c"}}, "conflict"),
    ({"$set": {"a.$[]": 1, "a.0": 1}}, "conflict"),
    ({"$set": {"a.$[].b": 1}, "$inc": {"a.x": 1}}, "conflict"),
    ({"$unset": {"_id": 1}}, "immutable field '_id'"),
    ({"$rename": {"_id": "x"}}, "immutable field '_id'"),
    ({"$rename": {"a": "a"}}, "must differ"),
    ({"$rename": {"a": "a.b"}}, "must not be on the same path"),
    ({"$rename": {"a.b": "a"}}, "must not be on the same path"),
    ({"$rename": {"a": 1}}, "must be a string"),
    ({"$rename": {"a.$[]": "b"}}, "may not be dynamic"),
    ({"$inc": {"a": "1"}}, "Cannot increment with non-numeric argument"),
    ({"$mul": {"a": True}}, "Cannot multiply with non-numeric argument"),
    ({"$push": {"a": {"$each": 1}}}, "must be an array"),
    ({"$push": {"a": {"$each": [], "$foo": 1}}}, "Unrecognized clause in \\$push"),
    ({"$push": {"a": {"$each": [], "$slice": 1.5}}}, "\\$slice must be an integer"),
    ({"$push": {"a": {"$each": [], "$sort": 2}}}, "1 or -1"),
    ({"$push": {"a": {"$each": [], "$sort": {}}}}, "pattern is empty"),
    ({"$push": {"a": {"$each": [], "$sort": {"a..b": 1}}}}, "empty part"),
    ({"$addToSet": {"a": {"$each": [], "x": 1}}}, "unexpected fields after \\$each"),
    ({"$pop": {"a": 2}}, "1 or -1"),
    ({"$pop": {"a": "x"}}, "Expected an integer"),
    ({"$pullAll": {"a": 1}}, "requires an array"),
    ({"$bit": {"a": {"nand": 1}}}, "only supports 'and', 'or', and 'xor'"),
    ({"$bit": {"a": {"and": 1.0}}}, "Integer\\(32/64 bit\\)"),
    ({"$bit": {"a": {}}}, "at least one bitwise operation"),
    ({"$currentDate": {"a": {"$type": "time"}}}, "'date' or 'timestamp'"),
    ({"$currentDate": {"a": {"x": 1}}}, "Unrecognized \\$currentDate option"),
    ({"$currentDate": {"a": 1}}, "not valid type for \\$currentDate"),
])
def test_invalid_updates(update, match):
    with pytest.raises(UpdateError, match=match):
        validate_update(update)
    fails({"_id": 1, "a": [1]}, update, match)


def test_validate_update_returns_the_top_level_fields_touched():
    assert validate_update({"$set": {"a.b": 1, "c": 1}, "$rename": {"d.e": "f.g"},
                            "$setOnInsert": {"h": 1}, "$pull": {"i.$[].j": 1}}) == \
        {"a", "c", "d", "f", "i"}
    assert validate_update({"$set": {}}) == set()  # empty operands are allowed since 5.0


# -- differential test against the server: generator ------------------------------------------

NAMES = ["a", "b", "c", "x", "0", "1", "2", "9", "10", "01", "!", "²"]
OPERATORS = ["$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$currentDate",
             "$setOnInsert", "$push", "$addToSet", "$pop", "$pullAll", "$pull", "$bit"]


def _scalar(r: random.Random) -> object:
    k = r.randrange(13)
    if k == 0:
        return r.choice([0, 1, -1, 2, 7, 2**31 - 1, -(2**31)])
    if k == 1:
        return Int64(r.choice([0, 1, 3, -5, 2**63 - 1, -(2**63), 2**40]))
    if k == 2:
        return r.choice([0.0, 1.0, 1.5, -2.25, 3.0, 1e300, 0.1])
    if k == 3:
        return r.choice(["", "a", "b", "ab", "B", "é"])
    if k == 4:
        return r.choice([True, False])
    if k == 5:
        return None
    if k == 6:
        return datetime.datetime(2000 + r.randrange(20), 1 + r.randrange(12), 1,
                                 r.randrange(24), 0, 0, r.randrange(1000) * 1000)
    if k == 7:
        return ObjectId(bytes([r.randrange(3)] * 12))
    if k == 8:
        return r.choice([b"", b"x", b"xy", uuid_binary(b"x"), Binary(b"y", 128)])
    if k == 9:
        return Regex(r.choice(["a", "b"]), r.choice(["", "i", "im"]))
    if k == 10:
        return Timestamp(r.randrange(1, 5), r.randrange(1, 3))
    if k == 11:
        return DatetimeMS(r.choice([2**60, -(2**60)]))  # outside Python's datetime range
    return r.choice([1, 2, 3, "a", "b"])


def _value(r: random.Random, depth: int = 0, in_array: bool = False) -> object:
    k = r.randrange(9)
    if depth < 2 and k == 0:
        return {n: _value(r, depth + 1) for n in r.sample(NAMES, r.randrange(0, 3))}
    if depth < 2 and k == 1 and not in_array:  # FerretDB cannot store arrays in arrays
        return [_value(r, depth + 1, True) for _ in range(r.randrange(0, 4))]
    return _scalar(r)


def random_doc(r: random.Random, _id: int) -> dict:
    doc: dict = {"_id": _id}
    for name in r.sample(NAMES, r.randrange(0, 5)):
        doc[name] = _value(r)
    return doc


def _path(r: random.Random, positional: bool = True) -> str:
    parts = [r.choice(NAMES + ["_id"] if r.random() < 0.05 else NAMES)]
    while r.random() < 0.4 and len(parts) < 4:
        parts.append(r.choice(NAMES + ["$[]"]) if positional else r.choice(NAMES))
    return ".".join(parts)


def _argument(r: random.Random, op: str) -> object:
    if op in ("$set", "$min", "$max", "$setOnInsert"):
        return _value(r)
    if op == "$unset":
        return ""
    if op in ("$inc", "$mul"):
        if r.random() < 0.05:
            return "x"
        return r.choice([1, -1, 2, 0, Int64(1), Int64(2**62), 1.5, -0.5, 2**31 - 1, 3])
    if op == "$currentDate":
        return r.choice([True, {"$type": "date"}, {"$type": "timestamp"}])
    if op in ("$push", "$addToSet"):
        if r.random() < 0.5:
            return _value(r, 1, True)
        arg: dict = {"$each": [_value(r, 1, True) for _ in range(r.randrange(0, 4))]}
        if op == "$push" and r.random() < 0.5:
            arg["$position"] = r.choice([0, 1, -1, 5, -5])
        if op == "$push" and r.random() < 0.5:
            arg["$slice"] = r.choice([0, 1, 2, -1, -2, 10])
        if op == "$push" and r.random() < 0.5:
            arg["$sort"] = r.choice([1, -1, {"a": 1}, {"a": -1, "b": 1}, {"a.b": 1}])
        return arg
    if op == "$pop":
        return r.choice([1, -1])
    if op == "$pullAll":
        return [_scalar(r) for _ in range(r.randrange(0, 3))]
    if op == "$pull":
        if r.random() < 0.7:
            return _scalar(r)
        return {r.choice(["a", "b"]): r.choice([1, "a", True])}
    if op == "$bit":
        return {r.choice(["and", "or", "xor"]): r.choice([1, 6, -1, Int64(5), 2**31 - 1])}
    assert op == "$rename"
    return _path(r, positional=False)


def random_update(r: random.Random) -> dict:
    update: dict = {}
    for op in r.sample(OPERATORS, r.randrange(1, 3)):
        update[op] = {_path(r, positional=op != "$rename"): _argument(r, op)
                      for _ in range(r.randrange(1, 3))}
    return update


# -- FerretDB 1.24's known deviations from MongoDB --------------------------------------------


def _paths(update: Mapping) -> list[tuple[str, list[str]]]:
    """(operator, parts) of every path an update names, $rename destinations included."""
    out = []
    for op, spec in update.items():
        for path, arg in spec.items():
            out.append((op, path.split(".")))
            if op == "$rename" and isinstance(arg, str):
                out.append((op, arg.split(".")))
    return out


_MISSING = object()


def _walk(doc: object, parts: list[str]) -> tuple[object, bool]:
    """(value at parts or _MISSING, whether an existing ancestor below the root is an array)."""
    cur, through_array = doc, False
    for i, part in enumerate(parts):
        if i and isinstance(cur, list):
            through_array = True
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and _digits(part) and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING, through_array or (i > 0 and isinstance(cur, list))
    return cur, through_array


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _numeric_lt(a: str, b: str) -> bool:
    def number(s: str) -> bool:
        return _digits(s[:1]) and not (s[0] == "0" and len(s) > 1)
    if number(a) and number(b) and len(a) != len(b):
        return len(a) < len(b)
    return a < b


def _numeric_order(doc: dict, update: Mapping, expected: object) -> bool:
    siblings: dict[tuple, set] = {}
    for _, parts in _paths(update):
        for i, part in enumerate(parts):
            siblings.setdefault(tuple(parts[:i]), set()).add(part)
    return any(_numeric_lt(a, b) != (a < b) for names in siblings.values()
               for a in names for b in names if a != b)


def _all_positional(doc: dict, update: Mapping, expected: object) -> bool:
    return any("$[]" in parts for _, parts in _paths(update))


def _current_date_dotted(doc: dict, update: Mapping, expected: object) -> bool:
    return any(op == "$currentDate" and len(parts) > 1 for op, parts in _paths(update))


def _push_modifiers(doc: dict, update: Mapping, expected: object) -> bool:
    return any(isinstance(arg, Mapping) and {"$sort", "$slice", "$position"} & set(arg)
               for arg in update.get("$push", {}).values())


def _empty_each_on_missing(doc: dict, update: Mapping, expected: object) -> bool:
    return any(isinstance(arg, Mapping) and arg.get("$each") == []
               and _walk(doc, path.split("."))[0] is _MISSING
               for op in ("$push", "$addToSet") for path, arg in update.get(op, {}).items())


def _unset_array_element(doc: dict, update: Mapping, expected: object) -> bool:
    for path in update.get("$unset", {}):
        parts = path.split(".")
        parent, _ = _walk(doc, parts[:-1])
        if isinstance(parent, list) and _walk(doc, parts)[0] is not _MISSING:
            return True
    return False


def _rename(doc: dict, update: Mapping, expected: object) -> bool:
    spec = update.get("$rename")
    if not spec:
        return False
    if len(update) > 1 or len(spec) > 1:
        return True
    ((src, dst),) = spec.items()
    a, b = src.split("."), str(dst).split(".")
    n = min(len(a), len(b))
    return a[:n] == b[:n] or _walk(doc, a)[1] or _walk(doc, b)[1]


def _id_paths(doc: dict, update: Mapping, expected: object) -> bool:
    return any(parts[0] == "_id" for _, parts in _paths(update))


def _int32_overflow(doc: dict, update: Mapping, expected: object) -> bool:
    def int32(v: object) -> bool:
        return type(v) is int and -(2**31) <= v < 2**31
    for path, arg in update.get("$inc", {}).items():
        cur = _walk(doc, path.split("."))[0]
        if int32(cur) and int32(arg) and not int32(cur + arg):  # type: ignore[operator]
            return True
    return False


def _regex_min_max(doc: dict, update: Mapping, expected: object) -> bool:
    def has_regex(v: object) -> bool:
        return any(isinstance(x, Regex) for x in _values(v))
    return any(has_regex(arg) and has_regex(_walk(doc, path.split("."))[0])
               for op in ("$min", "$max") for path, arg in update.get(op, {}).items())


def _values(v: object):
    yield v
    if isinstance(v, Mapping):
        for x in v.values():
            yield from _values(x)
    elif isinstance(v, list):
        for x in v:
            yield from _values(x)


def _unstorable(doc: dict, update: Mapping, expected: object) -> bool:
    return any((isinstance(v, float) and (not math.isfinite(v) or (v == 0 and math.copysign(1, v) < 0)))
               or (isinstance(v, list) and any(isinstance(x, list) for x in v))
               for v in _values(expected))


@dataclass(frozen=True)
class Deviation:
    name: str
    manual: str  # what the MongoDB manual says (or, where it is silent, what the server does)
    ferretdb: str  # what FerretDB 1.24 does instead
    applies: Callable[[dict, Mapping, object], bool]  # (doc, update, local result) -> skip?
    example: tuple[dict, dict]  # a case where FerretDB demonstrably differs


# The one list of cases where FerretDB 1.24 differs from MongoDB. The differential test skips
# exactly the cases these predicates select; test_ferretdb_deviations_are_real keeps it honest.
FERRETDB_DEVIATIONS = [
    Deviation("numeric field names", "Starting in MongoDB 5.0, update operators process "
              "document fields with string-based names in lexicographic order. Fields with "
              "numeric names are processed in numeric order.",
              "creates numeric names in lexicographic order ('10' before '9')",
              _numeric_order, ({"_id": 1}, {"$set": {"x.10": 1, "x.9": 1}})),
    Deviation("$[]", "The all positional operator $[] indicates that the update operator "
              "should modify all elements in the specified array field.",
              "does not support $[]", _all_positional,
              ({"_id": 1, "a": [1, 2]}, {"$inc": {"a.$[]": 1}})),
    Deviation("$currentDate dotted path", "$currentDate: To specify a <field> in an embedded "
              "document or in an array, use dot notation.",
              "takes the dotted path as one field name and rejects it", _current_date_dotted,
              ({"_id": 1}, {"$currentDate": {"a.b": True}})),
    Deviation("$push modifiers", "You can use the $push operator with the following "
              "modifiers: $each, $slice, $sort, $position.",
              "ignores $slice, $sort and $position", _push_modifiers,
              ({"_id": 1, "a": [3, 1]}, {"$push": {"a": {"$each": [2], "$sort": 1}}})),
    Deviation("empty $each on a missing field", "If the field is absent in the document to "
              "update, $push adds the array field with the value as its element.",
              "creates no field when $each is empty", _empty_each_on_missing,
              ({"_id": 1}, {"$push": {"a": {"$each": []}}})),
    Deviation("$unset of an array element", "If the field is an array element, $unset "
              "replaces the matching element with null rather than removing the matching "
              "element from the array.", "removes the element", _unset_array_element,
              ({"_id": 1, "a": [1, 2]}, {"$unset": {"a.0": 1}})),
    Deviation("$rename", "Update operators process document fields in lexicographic order; "
              "$rename does not work on embedded documents in arrays; the new field name "
              "must differ from the existing field name.",
              "applies $rename after the other operators, without conflict checks, through "
              "arrays and onto its own path; so only a lone $rename is compared", _rename,
              ({"_id": 1, "q": 1}, {"$rename": {"q": "a"}, "$set": {"b": 1}})),
    Deviation("$inc int32 overflow", "(The manual is silent; the server's SafeNum stores an "
              "int32 + int32 sum that overflows as a 64-bit integer.)",
              "wraps some int32 sums around", _int32_overflow,
              ({"_id": 1, "b": 3}, {"$inc": {"b": 2**31 - 1}})),
    Deviation("regex order", "Comparison/Sort Order puts all regular expressions in one "
              "place; the server orders two of them by pattern, then by flags (/b/ < /b/i).",
              "orders /b/i before /b/", _regex_min_max,
              ({"_id": 1, "c": Regex("b", "")}, {"$min": {"c": Regex("b", "i")}})),
    Deviation("_id", "Once set, you cannot update the value of the _id field.",
              "lets 1 become 1.0, and renames onto _id silently", _id_paths,
              ({"_id": 1}, {"$set": {"_id": 1.0}})),
    Deviation("values FerretDB cannot store", "$mul: If the field does not exist in a "
              "document, $mul creates the field and sets the value to zero of the same numeric "
              "type as the multiplier (IEEE 754: -2.5 * 0 is -0.0). $push: If the value is an "
              "array, $push appends the whole array as a single element.",
              "stores -0.0 as 0.0, rejects infinities and arrays inside arrays", _unstorable,
              ({"_id": 1}, {"$mul": {"a": -2.5}})),
]


# -- mongo-java-server 1.47's known deviations from MongoDB ------------------------------------


def _bit(doc: dict, update: Mapping, expected: object) -> bool:
    return "$bit" in update


def _several_new_fields(doc: dict, update: Mapping, expected: object) -> bool:
    """Some document of the result gains two or more fields (their order then matters)."""
    def gains(before: object, after: object) -> bool:
        if isinstance(after, Mapping):
            old = before if isinstance(before, Mapping) else {}
            if sum(k not in old for k in after) >= 2:
                return True
            return any(gains(old.get(k), v) for k, v in after.items())
        if isinstance(after, list):
            old_list = before if isinstance(before, list) else []
            return any(gains(old_list[i] if i < len(old_list) else None, v)
                       for i, v in enumerate(after))
        return False
    return expected is not None and gains(doc, expected)


_UNCHECKED = ("Cannot create field", "would create a conflict", "must differ",
              "must not be on the same path")


def _unchecked_error(doc: dict, update: Mapping, expected: object) -> bool:
    if expected is not None:
        return False
    outcome, message = _local(doc, update)
    return outcome == "error" and any(m in str(message) for m in _UNCHECKED)


def _null_as_missing(doc: dict, update: Mapping, expected: object) -> bool:
    if expected is not None or _local(doc, update)[0] != "error":
        return False
    return any(_walk(doc, parts)[0] is None for _, parts in _paths(update))


def _overflow(doc: dict, update: Mapping, expected: object) -> bool:
    if expected is not None:
        return False
    outcome, message = _local(doc, update)
    return outcome == "error" and str(message).startswith("Failed to apply")


def _set_items(update: Mapping) -> list[object]:
    """What $addToSet adds, per path: a value, or the list under $each."""
    out = []
    for arg in update.get("$addToSet", {}).values():
        out.append(arg["$each"] if isinstance(arg, Mapping) and "$each" in arg else [arg])
    return out


def _add_to_set_quirks(doc: dict, update: Mapping, expected: object) -> bool:
    return any(x == {} or any(isinstance(v, Regex) for v in _values(x))
               for items in _set_items(update) for x in items)


def _push_sort_by_field(doc: dict, update: Mapping, expected: object) -> bool:
    return any(isinstance(arg, Mapping) and isinstance(arg.get("$sort"), Mapping)
               for arg in update.get("$push", {}).values())


def _rename_through_array(doc: dict, update: Mapping, expected: object) -> bool:
    return any(_walk(doc, str(path).split("."))[1]
               for src, dst in update.get("$rename", {}).items() for path in (src, dst))


def _negative_position(doc: dict, update: Mapping, expected: object) -> bool:
    return any(isinstance(arg, Mapping) and isinstance(arg.get("$position"), int)
               and arg["$position"] < 0 for arg in update.get("$push", {}).values())


def _unstorable_binary(doc: dict, update: Mapping, expected: object) -> bool:
    return any(isinstance(v, Binary) and ((v.subtype == 4 and len(v) != 16) or v.subtype >= 128)
               for src in (doc, update, expected) for v in _values(src))

def _negative_zero_result(doc: dict, update: Mapping, expected: object) -> bool:
    """An arithmetic update that would turn a stored 0.0 into -0.0 (MongoDB: no change)."""
    ops = {k: v for k, v in update.items() if k in ("$mul", "$inc")}
    return any(isinstance(doc.get(f), float) and doc.get(f) == 0.0 for spec in ops.values()
               for f in spec)


JAVASERVER_DEVIATIONS = [
    Deviation("arithmetic no-op on a zero", "SafeNum::isIdentical: an $inc/$mul whose result "
              "is the same number of the same type (-0.0 == 0.0) leaves the field as stored",
              "writes the result (-0.0 over 0.0)", _negative_zero_result,
              ({"_id": 1, "x": 0.0}, {"$mul": {"x": -1}})),
    Deviation("$bit", "Use the $bit operator to perform a bitwise update of a field (and, or, "
              "xor).", "answers 'Unsupported modifier: $bit'", _bit,
              ({"_id": 1, "a": 6}, {"$bit": {"a": {"and": 3}}})),
    Deviation("order of new fields", "Starting in MongoDB 5.0, update operators process "
              "document fields with string-based names in lexicographic order. Fields with "
              "numeric names are processed in numeric order.",
              "adds new fields in the order the update names them (MongoDB 4.x)",
              _several_new_fields, ({"_id": 1}, {"$set": {"b": 1, "a": 1}})),
    Deviation("paths and conflicts left unchecked", "An update cannot create a field inside "
              "a scalar (\"Cannot create field\"), two operators cannot name the same path "
              "or one path and its prefix (\"would create a conflict\"), and the source and "
              "target of $rename must differ and not be on the same path.",
              "accepts them: writes through null, ignores the conflict, renames onto itself",
              _unchecked_error, ({"_id": 1, "a": None}, {"$set": {"a.b": 1}})),
    Deviation("null taken as a missing field", "$mul, $push, $addToSet and $pop fail on a "
              "field that holds a value of the wrong type; null is a value (a missing field "
              "is not).", "treats null like a missing field (null * 2 = 0, $push onto null "
              "makes an array, $pop of null is a no-op)", _null_as_missing,
              ({"_id": 1, "a": None}, {"$mul": {"a": 2}})),
    Deviation("integer overflow", "(The manual is silent; the server refuses an $inc or $mul "
              "whose int64 result overflows: 'Failed to apply $mul operations'.)",
              "wraps the int64 around", _overflow,
              ({"_id": 1, "a": Int64(2**62)}, {"$mul": {"a": 4}})),
    Deviation("_id", "Once set, you cannot update the value of the _id field.",
              "refuses any update operator naming _id, even one that leaves it unchanged",
              _id_paths, ({"_id": 1}, {"$min": {"_id": 2}})),
    Deviation("$addToSet of {} or of a regex", "$addToSet only ensures that there are no "
              "duplicate items added to the set.", "fails with 'Unknown error: null' on an "
              "empty document, and adds a regular expression the array already holds",
              _add_to_set_quirks, ({"_id": 1, "a": [Regex("b", "")]},
                                   {"$addToSet": {"a": Regex("b", "")}})),
    Deviation("$push $sort by field", "$sort by a field of embedded documents: elements that "
              "are not documents sort as if the field were missing (null), in BSON order.",
              "orders such ties otherwise (false after {})", _push_sort_by_field,
              ({"_id": 1}, {"$push": {"a": {"$each": [False, {}], "$sort": {"a": 1}}}})),
    Deviation("$rename through an array", "$rename does not work on embedded documents in "
              "arrays (no match: nothing is renamed).", "fails with 'cannot traverse "
              "element'", _rename_through_array,
              ({"_id": 1, "a": [{"b": 1}]}, {"$rename": {"a.0.c": "x"}})),
    Deviation("$push negative $position", "$position: a negative number counts from the end "
              "of the array.", "fails with 'Index: -5, Size: 0'", _negative_position,
              ({"_id": 1, "a": []}, {"$push": {"a": {"$each": [1], "$position": -5}}})),
    Deviation("values mongo-java-server cannot store", "BSON binary subtypes are opaque to "
              "the server: any length with subtype 4, user-defined subtypes 128-255.",
              "drops the connection on a subtype-4 binary that is not 16 bytes and stores "
              "subtypes >= 128 as subtype 0", _unstorable_binary,
              ({"_id": 1}, {"$set": {"a": Binary(b"y", 128)}})),
]

#: The test servers' known deviations (``url``: a server given by $MONGRATE_TEST_URL, whose
#: kind is read from buildInfo).
DEVIATIONS = {"ferretdb": FERRETDB_DEVIATIONS, "javaserver": JAVASERVER_DEVIATIONS,
              "mongodb": []}


def server_kind(mongo_server: str, db) -> str:
    if mongo_server != "url":
        return mongo_server
    return "ferretdb" if "ferretdbVersion" in db.client.admin.command("buildInfo") else "mongodb"


def ferretdb_deviation(doc: dict, update: Mapping, expected: object,
                       deviations: list[Deviation] = FERRETDB_DEVIATIONS) -> Deviation | None:
    """The first known deviation of the server that applies to this case, if any."""
    return next((d for d in deviations if d.applies(doc, update, expected)), None)


# -- differential test against the server ------------------------------------------------------

DECODE = EXACT
NOW = datetime.datetime(2031, 1, 1, 12, 0, 0, 125000)  # what $currentDate writes locally


def _local(doc: dict, update: dict) -> tuple[str, object]:
    try:
        return "ok", apply_update(doc, update, now=NOW)
    except UpdateError as exc:
        return "error", str(exc)
    except UnsupportedUpdate as exc:
        return "unsupported", str(exc)


def _server_now_to_local(v: object, started: datetime.datetime) -> object:
    """Replace the server's $currentDate values (the current time) by NOW."""
    if isinstance(v, datetime.datetime) and abs((v - started).total_seconds()) < 600:
        return NOW
    if isinstance(v, Timestamp) and abs(v.time - started.timestamp()) < 600:
        return Timestamp(NOW, 1)
    if isinstance(v, dict):
        return {k: _server_now_to_local(x, started) for k, x in v.items()}
    if isinstance(v, list):
        return [_server_now_to_local(x, started) for x in v]
    return v


def differential(coll, seed: int, n_cases: int, batch: int = 20,
                 deviations: list[Deviation] = FERRETDB_DEVIATIONS) -> dict:
    """Run n_cases random updates here and on the server; return counts and mismatches.
    Cases that one of the server's known ``deviations`` selects are counted, not sent."""
    r = random.Random(seed)
    raw = coll.with_options(codec_options=DECODE.with_options(document_class=RawBSONDocument))
    report: dict = {"compared": 0, "both_failed": 0, "unsupported": 0, "mismatches": [],
                    "deviations": {}}
    started = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    for first in range(0, n_cases, batch):
        cases = []
        for _id in range(first, min(first + batch, n_cases)):
            doc, update = random_doc(r, _id), random_update(r)
            outcome, expected = _local(doc, update)
            deviation = ferretdb_deviation(doc, update, expected if outcome == "ok" else None,
                                           deviations)
            if deviation is not None:
                report["deviations"][deviation.name] = report["deviations"].get(deviation.name, 0) + 1
            elif outcome == "unsupported":
                report["unsupported"] += 1
            else:
                cases.append((doc, update, outcome, expected))
        coll.delete_many({})
        if not cases:
            continue
        coll.insert_many([doc for doc, *_ in cases])
        failed = {}
        for doc, update, *_ in cases:
            try:
                coll.update_one({"_id": doc["_id"]}, update)
            except OperationFailure as exc:
                failed[doc["_id"]] = str(exc).split(", full error")[0]
        stored = {d["_id"]: d.raw for d in raw.find({})}
        for doc, update, outcome, expected in cases:
            got = failed.get(doc["_id"])
            if got is None:
                data = stored[doc["_id"]]
                if "$currentDate" in update:
                    data = bson.encode(_server_now_to_local(bson.decode(data, DECODE), started))
                if outcome == "ok" and bson.encode(expected) == data:
                    report["compared"] += 1
                    continue
                got = bson.decode(data, DECODE)
            elif outcome == "error":
                report["both_failed"] += 1
                continue
            report["mismatches"].append((doc, update, (outcome, expected), got))
    return report


def _server_outcome(coll, doc: dict, update: dict) -> tuple[str, object]:
    coll.delete_many({})
    coll.insert_one(doc)
    try:
        coll.update_one({"_id": doc["_id"]}, update)
    except OperationFailure as exc:
        return "error", str(exc)
    return "ok", coll.find_one({"_id": doc["_id"]})


# Cases of MongoDB's rules (see the unit tests above for where each comes from), each
# also checked on the server: the evaluator and the server must store the same bytes.
RULE_CASES = [
    ({"_id": 1}, {"$set": {"9": 1, "!": 1, "01": 1}}),
    ({"_id": 1}, {"$set": {"²": 1, "2": 1, "a": 1}}),
    ({"_id": 1, "a": [1]}, {"$set": {"a.²": 1}}),
    ({"_id": 1, "a": [1]}, {"$unset": {"a.²": 1}}),
    ({"_id": 1, "x": [True, -1]}, {"$set": {"x.0000010": 3, "x.0000": False}}),
    ({"_id": 1, "a": [1, 2]}, {"$set": {"a.01": 9}}),
    ({"_id": 1, "a": [{"b": 1}]}, {"$inc": {"a.00.b": 1}}),
    ({"_id": 1, "a": {"1": 1}}, {"$set": {"a.01": 2}}),
    ({"_id": 1, "x": 0.0}, {"$mul": {"x": -1}}),
    ({"_id": 1, "x": 0.0}, {"$mul": {"x": -1.5}, "$inc": {"y": 0}}),
    ({"_id": 1, "x": 5}, {"$inc": {"x": Int64(0)}}),
    ({"_id": 1, "x": Int64(5)}, {"$mul": {"x": 1.0}}),
]


@pytest.mark.parametrize("doc, update", RULE_CASES)
def test_mongodb_rules_match_the_server(mongo_db, mongo_server, doc, update):
    db, deviations = mongo_db, DEVIATIONS[server_kind(mongo_server, mongo_db)]
    local = _local(doc, update)
    assert local[0] != "unsupported", local
    deviation = next((d for d in deviations
                      if d.applies(doc, update, local[1] if local[0] == "ok" else None)), None)
    if deviation is not None:
        pytest.skip(f"a known deviation of this server: {deviation.name}")
    got = _server_outcome(db.get_collection("rules", codec_options=DECODE), doc, update)
    assert got[0] == local[0], (local, got)
    if got[0] == "ok":
        assert bson.encode(got[1]) == bson.encode(local[1]), (local, got)


def test_server_deviations_are_real(mongo_db, mongo_server):
    """Each listed deviation of this server still shows (else it must go from the list)."""
    deviations = DEVIATIONS[server_kind(mongo_server, mongo_db)]
    if not deviations:
        pytest.skip("MongoDB itself: no deviations to confirm")
    coll = mongo_db.get_collection("deviations", codec_options=DECODE)
    for deviation in deviations:
        doc, update = deviation.example
        local = _local(doc, update)
        assert local[0] != "unsupported", deviation.name
        assert deviation.applies(doc, update, local[1] if local[0] == "ok" else None), deviation.name
        server = _server_outcome(coll, doc, update)
        same = local[0] == server[0] == "error" or (
            local[0] == server[0] == "ok" and bson.encode(local[1]) == bson.encode(server[1]))
        assert not same, f"{mongo_server} now agrees with MongoDB on {deviation.name!r}: drop it"


def test_matches_the_server_on_random_updates(mongo_db, mongo_server):
    kind = server_kind(mongo_server, mongo_db)
    deviations = DEVIATIONS[kind]
    report = differential(mongo_db["random_updates"], seed=20261202, n_cases=3000,
                          deviations=deviations)
    problems = [f"doc={doc} update={update} local={local} server={server}"
                for doc, update, local, server in report["mismatches"][:5]]
    assert not problems, "\n".join(problems)
    # Not vacuous: most cases reach the server, with both outcomes.
    # (mongo-java-server's longer list of deviations leaves fewer cases: ~1000 and ~380)
    compared, both_failed = (800, 300) if kind == "javaserver" else (1200, 400)
    assert report["compared"] > compared and report["both_failed"] > both_failed, report
    assert report["unsupported"] < 100, report
