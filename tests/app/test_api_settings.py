"""Configuration from the original service's variable names; the standalone app starts from them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app_patch.service.settings import Settings, SettingsError


def test_defaults_and_the_services_names():
    s = Settings.from_env({"JWT_ACCESS_SECRET": "k"})
    assert (s.mongodb_url, s.effective_database, s.jwt_secret) == (
        "mongodb://localhost:27017",
        "flowise_proxy",
        "k",
    )
    s = Settings.from_env(
        {
            "MONGODB_URL": "mongodb://db:27017",
            "MONGODB_DATABASE_NAME": "chat",
            "JWT_SECRET_KEY": "fallback",
            "FILE_MAX_UPLOAD_BYTES": "5_000_000",
        }
    )
    assert (s.effective_database, s.jwt_secret, s.max_upload_bytes) == (
        "chat",
        "fallback",
        5_000_000,
    )


def test_a_database_in_the_url_wins():
    s = Settings.from_env(
        {
            "MONGODB_URL": "mongodb://u:p@db:27017/prod?authSource=admin",
            "MONGODB_DATABASE_NAME": "other",
            "JWT_ACCESS_SECRET": "k",
        }
    )
    assert s.effective_database == "prod"


def test_access_secret_wins_over_the_legacy_name():
    s = Settings.from_env({"JWT_ACCESS_SECRET": "new", "JWT_SECRET_KEY": "old"})
    assert s.jwt_secret == "new"


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "JWT_ACCESS_SECRET"),
        ({"JWT_ACCESS_SECRET": "k", "FILE_MAX_UPLOAD_BYTES": "ten"}, "FILE_MAX_UPLOAD_BYTES"),
        ({"JWT_ACCESS_SECRET": "k", "THUMBNAIL_CONCURRENCY": "0"}, "thumbnail_concurrency"),
        ({"JWT_ACCESS_SECRET": "k", "HISTORY_MAX_LIMIT": "0"}, "history_max_limit"),
    ],
)
def test_bad_configuration_is_one_clear_error(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_module_level_app_reads_the_environment_at_startup(monkeypatch, mongo_url, mongo_db):
    from app_patch.service.app import create_app
    from tests.app.conftest import ALICE, bearer

    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("JWT_ACCESS_SECRET", "from-the-environment-0123456789ab")
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    mongo_db.chat_sessions.insert_one({"session_id": "s1", "user_id": ALICE})
    with TestClient(create_app()) as c:
        url = "/api/v1/chat/sessions/s1/history"
        assert c.get(url, headers=bearer(ALICE)).status_code == 401  # the test secret is not it
        from app_patch.service.auth import issue_token

        token = issue_token(ALICE, "from-the-environment-0123456789ab")
        assert c.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_startup_fails_fast_without_a_secret(monkeypatch):
    from app_patch.service.app import create_app

    monkeypatch.delenv("JWT_ACCESS_SECRET", raising=False)
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match="JWT_ACCESS_SECRET"), TestClient(create_app()):
        pass
