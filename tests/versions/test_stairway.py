"""The image-rendering revisions through the authors' stairway test: one step up at a time,
one step down at a time, each downgrade byte-exact, on seeded data."""

from __future__ import annotations

from app_patch.testdata.seed import seed
from mongrate.testing.kit import Harness
from tests.versions.conftest import CHAIN, ROOT, SMALL, VERSIONS


def test_stairway_on_seeded_data(mongo_url):
    harness = Harness(mongo_url, script_location=VERSIONS, prepend_sys_path=(ROOT,),
                      batch_size=25)
    try:
        harness.single_head()
        assert harness.stairway(lambda db: seed(db, **SMALL, seed=5)) == list(CHAIN)
    finally:
        harness.close()
