"""Dependencies between layers point down (DESIGN.md): checked on the import graph that
tests/test_import_circles.py reads with ``ast``."""

from __future__ import annotations

from tests.test_import_circles import import_graph


def outside_imports(package: str) -> set[str]:
    """The modules of this tree that ``package``'s modules import from outside it."""
    out: set[str] = set()
    for module, deps in import_graph().items():
        if module == package or module.startswith(package + "."):
            out |= {d for d in deps if d != package and not d.startswith(package + ".")}
    return out


def test_mongo_imports_nothing_of_mongrate_but_its_errors():
    assert outside_imports("mongrate.mongo") <= {"mongrate.errors"}


def test_the_update_evaluator_does_not_import_its_parser():
    # parse builds the tree evaluate walks: evaluate is the lower of the two
    graph = import_graph()
    assert "mongrate.mongo.update.parse" in graph["mongrate.mongo.update"]
    assert not graph["mongrate.mongo.update.evaluate"] & {
        "mongrate.mongo.update", "mongrate.mongo.update.parse"}
