"""mongrate's built-in migration tests, added to a pytest run by ``--mongrate-tests`` (or
``mongrate_tests = true`` in the pytest ini): they run the project's revisions (its
``mongrate.ini``, or ``--mongrate-config``) against a fresh database of the test server.
Define a ``mongrate_seed`` fixture returning ``seed(db)`` to give the stairway real data."""

from __future__ import annotations

import pytest


@pytest.fixture
def mongrate_harness(mongo_url, request):
    from mongrate.testing.kit import Harness

    config = (request.config.getoption("mongrate_config")
              or request.config.getini("mongrate_config") or "mongrate.ini")
    harness = Harness(mongo_url, config)
    yield harness
    harness.close()


def _seed(request):
    try:
        return request.getfixturevalue("mongrate_seed")
    except pytest.FixtureLookupError:
        return None


def test_single_head_revision(mongrate_harness):
    """The revisions have exactly one head (else 'mongrate merge heads')."""
    mongrate_harness.single_head()


def test_upgrade_head_and_back_to_base(mongrate_harness):
    """Every revision upgrades and downgrades, base to head and back, on an empty database."""
    mongrate_harness.up_down_consistency()


def test_stairway(mongrate_harness, request):
    """One step up at a time to head, one step down at a time to base; each downgrade puts
    back exactly (byte for byte) what was there before its upgrade."""
    mongrate_harness.stairway(_seed(request))
