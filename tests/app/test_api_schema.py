"""Schemathesis over the app's OpenAPI schema, against a live uvicorn: no input gives a 5xx.

Every operation is fuzzed with valid and invalid inputs (schemathesis' positive and negative
modes), once with generated path parameters and once pinned to ids that exist, so the
fuzzing reaches the database and GridFS code rather than stopping at a 404. More examples:
``APP_FUZZ_EXAMPLES=200 pytest tests/app/test_api_schema.py``.
"""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from app_patch.service.app import create_app
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, apply_contract, at, bearer, live_server

EXAMPLES = int(os.environ.get("APP_FUZZ_EXAMPLES", "20"))
pytestmark = pytest.mark.slow  # about 30 s
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def target(mongo_server_url, mongo_client, tmp_path_factory):
    """A live server over a module-wide database holding Alice's untidy session."""
    from app_patch.service.settings import Settings
    from mongrate.config import with_database
    from tests.app.conftest import SECRET

    name = f"t_fuzz_{os.getpid()}"
    db = mongo_client[name]
    s = add_session(
        db,
        user_id=ALICE,
        messages=[
            ("user", "pics", at(0)),
            ("assistant", "ok", at(5)),
            ("user", "more", at(10), {"file_ids": None}),
        ],
        uploads=[
            {"kind": "jpeg", "message": 0},
            {"kind": "pdf", "message": 0},
            {"kind": "truncated_png", "message": 2, "listed": False},
            {"kind": "large_dims_png", "message": 2},
            {"kind": "zero_byte", "message": 2},
        ],
    )
    apply_contract(db)
    settings_ = Settings(
        mongodb_url=with_database(mongo_server_url, name),
        jwt_secret=SECRET,
        max_upload_bytes=200_000,
    )
    with live_server(create_app(settings_)) as base:
        yield {
            "base": base,
            "session_id": s.session_id,
            "message_id": s.message_ids[0],
            "file_id": s.file_ids[0],
        }
    mongo_client.drop_database(name)


def _known_ids(op, ids) -> dict[str, str]:
    names = {p.name for p in op.iter_parameters() if p.location == "path"}
    return {k: ids[k] for k in ("session_id", "message_id", "file_id") if k in names}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.label)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value
)
@pytest.mark.parametrize("pinned", [False, True], ids=["generated-ids", "real-ids"])
def test_no_input_gives_a_server_error(target, op, mode, pinned):
    pinned_ids = _known_ids(op, target) if pinned else {}
    if pinned and not pinned_ids:
        pytest.skip("no path parameters to pin")
    http = requests.Session()
    headers = bearer(ALICE)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data):
        case = data.draw(op.as_strategy(mode, path_parameters=pinned_ids or None))
        response = case.call(base_url=target["base"], session=http, headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{response.status_code} for {case.method} {case.formatted_path} "
            f"query={case.query} body={str(case.body)[:200]}: {response.text[:300]}"
        )

    run()
