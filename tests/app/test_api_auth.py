"""Bearer JWTs (HS256 only) and user scoping, on every route."""

from __future__ import annotations

import base64
import json
import time
import warnings

import jwt
import pytest
from bson import ObjectId

from app_patch.service.auth import AuthError, issue_token, user_id_from_token
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.app.conftest import ALICE, BOB, SECRET, at

API = "/api/v1/chat"


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(**extra):
    now = int(time.time())
    claims = {"sub": ALICE, "user_id": ALICE, "type": "access", "iat": now, "nbf": now,
              "exp": now + 6 * 3600, **extra}  # outlives a slow suite run
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP = object()  # a claim left out


def unsigned() -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."


def tampered() -> str:
    """Bob's valid token with the payload swapped for Alice's (signature kept)."""
    head, _, sig = issue_token(BOB, SECRET).split(".")
    return f"{head}.{_b64(_claims())}.{sig}"


def hs512() -> str:
    """Right key, other algorithm: refused because only HS256 is configured."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT wants 64-byte keys for HS512
        return jwt.encode(_claims(), SECRET, "HS512")


BAD_AUTH = {
    "missing": None,
    "basic": "Basic dXNlcjpwYXNz",
    "empty_bearer": "Bearer ",
    "garbage": "Bearer not-a-jwt",
    "three_dots": "Bearer a.b.c",
    "expired": "Bearer " + jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, "HS256"),
    "alg_none": "Bearer " + unsigned(),
    "wrong_key": "Bearer "
    + jwt.encode(_claims(), "some-other-secret-that-is-long-enough", "HS256"),
    "hs512": "Bearer " + hs512(),
    "no_exp": "Bearer " + jwt.encode(_claims(exp=_DROP), SECRET, "HS256"),
    # The original's 7-day refresh tokens, and tokens that say no type, are not access tokens.
    "refresh": "Bearer " + jwt.encode(_claims(type="refresh", sub=ALICE), SECRET, "HS256"),
    "no_type": "Bearer " + jwt.encode(_claims(type=None), SECRET, "HS256"),
    "type_is_a_list": "Bearer " + jwt.encode(_claims(type=["access"]), SECRET, "HS256"),
    "not_yet_valid": "Bearer " + jwt.encode(_claims(nbf=int(time.time()) + 600), SECRET, "HS256"),
    "no_user": "Bearer " + jwt.encode(_claims(user_id=_DROP, sub=_DROP), SECRET, "HS256"),
    "empty_user": "Bearer " + jwt.encode(_claims(user_id="", sub=""), SECRET, "HS256"),
    "user_is_a_list": "Bearer " + jwt.encode(_claims(sub=["a"]), SECRET, "HS256"),
    # The original requires sub (user_id alone is refused), iat and nbf.
    "no_sub": "Bearer " + jwt.encode(_claims(sub=_DROP), SECRET, "HS256"),
    "empty_sub": "Bearer " + jwt.encode(_claims(sub=""), SECRET, "HS256"),
    "no_iat": "Bearer " + jwt.encode(_claims(iat=_DROP), SECRET, "HS256"),
    "no_nbf": "Bearer " + jwt.encode(_claims(nbf=_DROP), SECRET, "HS256"),
    "tampered": "Bearer " + tampered(),
}


@pytest.fixture
def world(mongo_db):
    """Alice's session with a message carrying an image; ids for every route."""
    s = add_session(
        mongo_db,
        user_id=ALICE,
        messages=[("user", "pic", at(0))],
        uploads=[{"kind": "png", "message": 0, "name": "a.png"}],
    )
    return {"session": s.session_id, "message": s.message_ids[0], "file": s.file_ids[0]}


def requests_for(w):
    png = base64.b64encode(sample_variant("png", 0).data).decode()
    upload = {"session_id": w["session"], "uploads": [{"data": png, "name": "x.png"}]}
    return {
        "history": ("GET", f"{API}/sessions/{w['session']}/history", {}),
        "session_files": ("GET", f"{API}/files/session/{w['session']}", {}),
        "message_files": ("GET", f"{API}/files/message/{w['message']}", {}),
        "file": ("GET", f"{API}/files/{w['file']}", {}),
        "download": ("GET", f"{API}/files/{w['file']}?download=true", {}),
        "thumbnail": ("GET", f"{API}/files/{w['file']}/thumbnail?size=100", {}),
        "upload": ("POST", f"{API}/files", {"json": upload}),
        "delete": ("DELETE", f"{API}/files/{w['file']}", {}),
    }


def missing_equivalent(w, route):
    """The same request for a resource that does not exist."""
    fake = str(ObjectId())
    return {
        "history": ("GET", f"{API}/sessions/nope/history", {}),
        "session_files": ("GET", f"{API}/files/session/nope", {}),
        "message_files": ("GET", f"{API}/files/message/{fake}", {}),
        "file": ("GET", f"{API}/files/{fake}", {}),
        "download": ("GET", f"{API}/files/{fake}?download=true", {}),
        "thumbnail": ("GET", f"{API}/files/{fake}/thumbnail?size=100", {}),
        "upload": (
            "POST",
            f"{API}/files",
            {"json": {**requests_for(w)["upload"][2]["json"], "session_id": "nope"}},
        ),
        "delete": ("DELETE", f"{API}/files/{fake}", {}),
    }[route]


#: No bearer token at all: the original's HTTPBearer() answers 403 (FastAPI 0.104).
NO_BEARER = {"missing", "basic", "empty_bearer"}


@pytest.mark.parametrize("attack", sorted(BAD_AUTH))
def test_bad_tokens_are_401_on_every_route(client, world, attack, mongo_db):
    header = BAD_AUTH[attack]
    headers = {"Authorization": header} if header is not None else {}
    for route, (method, path, kw) in requests_for(world).items():
        r = client.request(method, path, headers=headers, **kw)
        if attack in NO_BEARER:
            assert r.status_code == 403, (attack, route, r.text)
            assert r.json() == {"detail": "Not authenticated"}
            continue
        assert r.status_code == 401, (attack, route, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert mongo_db["fs.files"].count_documents({}) == 1  # nothing uploaded or deleted


def test_good_tokens_reach_every_route(client, world, alice):
    for route, (method, path, kw) in requests_for(world).items():
        r = client.request(method, path, headers=alice, **kw)
        assert r.status_code in (200, 201), (route, r.text)


#: The file lists answer 200 with no files, as the original did, for unknown and foreign ids.
EMPTY_LISTS = {"session_files", "message_files"}


def test_another_user_gets_404_on_every_route_same_as_for_nothing(client, world, bob, mongo_db):
    for route, (method, path, kw) in requests_for(world).items():
        theirs = client.request(method, path, headers=bob, **kw)
        method2, path2, kw2 = missing_equivalent(world, route)
        nothing = client.request(method2, path2, headers=bob, **kw2)
        if route in EMPTY_LISTS:
            assert theirs.status_code == nothing.status_code == 200, (route, theirs.text)
            assert theirs.json()["files"] == nothing.json()["files"] == [], route
            continue
        assert theirs.status_code == nothing.status_code == 404, (route, theirs.text)
        assert theirs.json() == nothing.json(), route
    assert mongo_db["fs.files"].count_documents({}) == 1
    assert mongo_db.file_uploads.count_documents({"user_id": BOB}) == 0


def test_another_users_data_costs_the_same_queries_as_nothing(
    client, world, bob, command_log
):
    """Timing must not tell whether a file, message or session exists: for every route the
    foreign resource and a missing one send the same commands to the same collections."""
    for route, (method, path, kw) in requests_for(world).items():
        command_log.clear()
        theirs = client.request(method, path, headers=bob, **kw)
        theirs_sent = command_log.data_commands()
        command_log.clear()
        method2, path2, kw2 = missing_equivalent(world, route)
        nothing = client.request(method2, path2, headers=bob, **kw2)
        assert theirs.status_code == nothing.status_code, route
        assert theirs_sent == command_log.data_commands(), route
        assert theirs_sent, route  # the comparison measured something


def _access(**claims) -> str:
    now = int(time.time())
    base = {"type": "access", "iat": now, "nbf": now, "exp": now + 60}
    return jwt.encode({**base, **claims}, SECRET, "HS256")


def test_the_user_is_sub_and_sub_is_required():
    """As the original: a token without a truthy sub is refused before its middleware's
    ``sub or user_id`` runs, so user_id alone never names the user."""
    assert user_id_from_token(issue_token("u1", SECRET), SECRET) == "u1"
    assert user_id_from_token(_access(sub="u2"), SECRET) == "u2"
    assert user_id_from_token(_access(user_id="u3", sub="u4"), SECRET) == "u4"
    for claims in ({"user_id": "u5", "sub": ""}, {"user_id": "u6"}):
        with pytest.raises(AuthError, match="sub"):
            user_id_from_token(_access(**claims), SECRET)
    for missing in ("iat", "nbf", "exp"):
        now = int(time.time())
        claims = {"sub": "u7", "type": "access", "iat": now, "nbf": now, "exp": now + 60}
        del claims[missing]
        with pytest.raises(AuthError, match="invalid token"):
            user_id_from_token(jwt.encode(claims, SECRET, "HS256"), SECRET)
    with pytest.raises(AuthError, match="access token"):
        user_id_from_token(BAD_AUTH["refresh"].split()[1], SECRET)
    with pytest.raises(AuthError, match="expired"):
        user_id_from_token(BAD_AUTH["expired"].split()[1], SECRET)


def test_a_sub_only_token_sees_its_users_data(client, world):
    token = _access(sub=ALICE)
    r = client.get(
        f"{API}/sessions/{world['session']}/history", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200


def test_a_token_naming_two_users_speaks_for_its_sub(client, world):
    """sub=Bob, user_id=Alice: Bob, as the original decides, so Alice's session is a 404."""
    token = _access(sub=BOB, user_id=ALICE)
    r = client.get(
        f"{API}/sessions/{world['session']}/history", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 404


def test_demo_login_needs_demo_mode_as_well_as_a_user(mongo_url, world):
    from fastapi.testclient import TestClient

    from app_patch.service.app import create_app
    from app_patch.service.settings import Settings

    env = {"MONGODB_URL": mongo_url, "JWT_ACCESS_SECRET": SECRET, "DEMO_USER_ID": ALICE}
    assert Settings.from_env(env).demo_mode is False
    assert Settings.from_env({**env, "DEMO_MODE": "1"}).demo_mode is True
    with pytest.raises(ValueError, match="DEMO_MODE"):
        Settings.from_env({**env, "DEMO_MODE": "maybe"})
    with TestClient(create_app(Settings.from_env(env))) as c:
        r = c.post("/demo/login")
    assert r.status_code == 404 and "DEMO_MODE" in r.json()["detail"]


def test_the_demo_token_may_read_but_not_write(client, world, mongo_db):
    login = client.post("/demo/login")
    assert login.status_code == 200
    assert jwt.decode(login.json()["token"], SECRET, ["HS256"])["scope"] == "read"
    demo = {"Authorization": f"Bearer {login.json()['token']}"}
    for route, (method, path, kw) in requests_for(world).items():
        r = client.request(method, path, headers=demo, **kw)
        expected = 403 if method in ("POST", "DELETE") else 200
        assert r.status_code == expected, (route, r.text)
    assert mongo_db["fs.files"].count_documents({}) == 1  # nothing uploaded or deleted
    assert mongo_db.file_uploads.count_documents({}) == 1
    # The scope must be exactly "read": a broader scope keeps the usual rights.
    wider = bearer_for(ALICE, scope="read write")
    assert client.delete(f"{API}/files/{world['file']}", headers=wider).status_code == 200


def bearer_for(user_id, **claims):
    return {"Authorization": f"Bearer {issue_token(user_id, SECRET, **claims)}"}
