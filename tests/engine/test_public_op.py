"""One public ``op``: its type is exported from ``mongrate``, the template annotates ``op``
with it, counts go through ``op.report``, and the engine's internals are not on it."""

from __future__ import annotations

import subprocess
import sys

import mongrate
from mongrate.testing.kit import revision_op

INTERNALS = ("engine", "engine_write", "pass_state", "side_collections", "results")


def test_operations_is_exported_and_shows_only_the_helpers(mongo_db):
    from mongrate.operations.ops import Operations

    assert mongrate.Operations is Operations and "Operations" in mongrate.__all__
    with revision_op(mongo_db, "aaaa1111") as op:
        assert isinstance(op, mongrate.Operations)
        assert [n for n in INTERNALS if hasattr(op, n)] == []
        op.report(seen=3, **{"items changed": 2})
        op.report(seen=4)
        from mongrate.operations.ops import reported

        assert reported(op) == {"seen": 4, "items changed": 2}


def test_importing_mongrate_loads_no_driver():
    code = "import sys, mongrate; print('pymongo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # `mongrate --help` stays fast


def test_the_template_annotates_op_and_the_revision_runs(project, mongo_db):
    r = project.run("revision", "-m", "typed", "--rev-id", "aaaa1111")
    assert r.code == 0, r.err
    (path,) = project.versions.glob("aaaa1111_*.py")
    text = path.read_text()
    assert "from mongrate import Operations\n" in text
    assert "def upgrade(op: Operations) -> None:" in text
    assert "def downgrade(op: Operations) -> None:" in text
    assert project.run("upgrade", "head").code == 0
    assert project.run("downgrade", "base").code == 0
