"""Bearer-token authentication: HS256 JWTs signed with the service's access secret.

The algorithm is fixed by configuration, never read from the token, so ``alg: none`` and
algorithm-confusion tokens fail signature checking. As in the original service's
``JWTHandler.verify_access_token``, a token must carry ``exp``, ``iat``, ``nbf``, a non-empty
``sub`` (the user) and ``type == "access"`` (its 7-day refresh tokens are refused). Stricter
on purpose: ``sub`` must be a string or an integer (the original took any truthy JSON).

A token whose ``scope`` claim is exactly ``read`` (the demo login's) may only read: the
routes that write (upload, delete) answer 403 to it. Tokens without a ``scope`` claim, like
the service's own, keep full access.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from app_patch.service.settings import JWT_ALGORITHM

READ_SCOPE = "read"
ACCESS_TYPE = "access"  # the original's TokenType.ACCESS


class AuthError(Exception):
    """The request carries no usable credentials; ``str(exc)`` is safe to show the client."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and whether it may only read."""

    user_id: str
    read_only: bool = False


def issue_token(user_id: str, secret: str, *, ttl_seconds: int = 3600, **claims: Any) -> str:
    """Sign an access token for ``user_id`` (used by the demo login and the tests)."""
    now = int(time.time())
    payload = {
        "sub": user_id,
        "user_id": user_id,
        "type": ACCESS_TYPE,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)


def user_id_from_token(token: str, secret: str) -> str:
    """Verify ``token`` and return its user id, or raise :class:`AuthError`."""
    return principal_from_token(token, secret).user_id


def principal_from_token(token: str, secret: str) -> Principal:
    """Verify ``token`` and return its :class:`Principal`, or raise :class:`AuthError`."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            # The original (JWTHandler._verify_token) requires exp, iat and nbf, and checks all.
            options={"require": ["exp", "iat", "nbf"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError:
        # Covers bad signatures, alg mismatches (incl. "none"), malformed tokens, missing exp.
        raise AuthError("invalid token") from None
    if claims.get("type") != ACCESS_TYPE:
        raise AuthError("not an access token (needs type=access)")
    # The original refuses a token without a truthy sub before its middleware's
    # `sub or user_id` runs, so the user is always sub; user_id alone is not enough.
    user_id = claims.get("sub")
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise AuthError("token names no user (needs a sub claim)")
    scope = claims.get("scope")
    scopes = scope.split() if isinstance(scope, str) else scope
    read_only = scopes == [READ_SCOPE]  # space-separated (RFC 8693) or a JSON list
    return Principal(str(user_id), read_only)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or raise :class:`AuthError`."""
    if not authorization:
        raise AuthError("missing Authorization: Bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token
