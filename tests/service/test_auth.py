"""Every way a bearer token can be wrong answers the same 401, under HS256 and RS256."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from field_encrypt import ConfigurationError
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend

from .conftest import make_token

NOW = dt.datetime.now(dt.UTC)
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


RSA_KEY = _rsa()
OTHER_RSA_KEY = _rsa()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: HS256 over ``key`` (any bytes), or unsigned when ``None``."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _claims(**override: Any) -> dict[str, Any]:
    from .conftest import AUDIENCE, ISSUER

    now = int(NOW.timestamp())
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "nbf": now - 5, "exp": now + 300}
    claims.update(override)
    return claims


def _assert_refused(client: TestClient, token: str | None, *, scheme: str = "Bearer") -> None:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    for method, path in (("GET", "/api/notes/?workspaceId=ws-a"), ("GET", "/api/notes/x")):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (token, response.text)
        assert response.json() == UNAUTHORIZED
        assert response.headers["www-authenticate"].startswith("Bearer")


PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

HS256_BAD_TOKENS = {
    "garbage": "not-a-jwt",
    "empty segments": "..",
    "bad signature": make_token(key="another-secret-" + "x" * 64),
    "alg none": _forge({"alg": "none", "typ": "JWT"}, _claims(), None),
    "alg None mixed case": _forge({"alg": "None", "typ": "JWT"}, _claims(), None),
    "expired": make_token(exp=NOW - dt.timedelta(seconds=1)),
    "wrong audience": make_token(aud="someone-else"),
    "wrong issuer": make_token(iss="https://evil.test"),
    "nbf in the future": make_token(nbf=NOW + dt.timedelta(days=1)),
    "missing exp": make_token(drop=("exp",)),
    "missing nbf": make_token(drop=("nbf",)),
    "missing iss": make_token(drop=("iss",)),
    "missing aud": make_token(drop=("aud",)),
    "missing sub": make_token(drop=("sub",)),
    "empty sub": make_token(sub=""),
    "workspaces claim not a list": make_token(workspaces="ws-a"),
    "RS256 token to an HS256 service": make_token(key=RSA_KEY, algorithm="RS256"),
    "HS512 token": make_token(algorithm="HS512"),
}


def test_no_token_answers_401(client: TestClient) -> None:
    """No Authorization header, or another scheme, is refused."""
    _assert_refused(client, None)
    _assert_refused(client, "dXNlcjpwYXNz", scheme="Basic")
    _assert_refused(client, "", scheme="Bearer")


@pytest.mark.parametrize("token", HS256_BAD_TOKENS.values(), ids=HS256_BAD_TOKENS.keys())
def test_hs256_service_refuses(client: TestClient, token: str) -> None:
    """Each defective token answers 401 with the same body."""
    _assert_refused(client, token)


def test_hs256_service_accepts_a_good_token(client: TestClient) -> None:
    """The control: a well-formed token gets through."""
    token = make_token()
    response = client.get(
        "/api/notes/?workspaceId=ws-a", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200


# -- RS256 with a JWKS file ------------------------------------------------------------------


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    public.update(kid="key-1", alg="RS256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public, {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]}))
    return path


@pytest.fixture
def rs_client(
    settings: NoteLettSettings, backend: Backend, jwks_file: Path
) -> Iterator[TestClient]:
    rs_settings = settings.model_copy(
        update={"jwt_algorithm": "RS256", "jwt_jwks": str(jwks_file), "jwt_secret": None}
    )
    with TestClient(create_app(rs_settings, backend=backend), raise_server_exceptions=False) as c:
        yield c


def _rs(**kwargs: Any) -> str:
    headers = kwargs.pop("headers", {"kid": "key-1"})
    return make_token(key=kwargs.pop("key", RSA_KEY), algorithm="RS256", headers=headers, **kwargs)


def test_rs256_service_accepts_a_token_from_the_jwks_key(rs_client: TestClient) -> None:
    """A token signed by the JWKS's key, with its kid, is accepted."""
    response = rs_client.get(
        "/api/notes/?workspaceId=ws-a", headers={"Authorization": f"Bearer {_rs()}"}
    )
    assert response.status_code == 200, response.text


RS256_BAD_TOKENS = {
    "unknown kid": lambda: _rs(headers={"kid": "key-2"}),
    "no kid": lambda: _rs(headers={}),
    "kid of a non-RSA key": lambda: _rs(headers={"kid": "hmac"}),
    "signed by another key": lambda: _rs(key=OTHER_RSA_KEY),
    "expired": lambda: _rs(exp=NOW - dt.timedelta(seconds=1)),
    "wrong audience": lambda: _rs(aud="other"),
    "wrong issuer": lambda: _rs(iss="https://evil.test"),
    "nbf in the future": lambda: _rs(nbf=NOW + dt.timedelta(days=1)),
    "alg none": lambda: _forge({"alg": "none", "kid": "key-1"}, _claims(), None),
    "HS256 signed with the public key (confusion)": lambda: _forge(
        {"alg": "HS256", "typ": "JWT", "kid": "key-1"}, _claims(), PUBLIC_PEM
    ),
    "HS256 signed with the jwks oct key": lambda: _forge(
        {"alg": "HS256", "typ": "JWT", "kid": "hmac"}, _claims(), b"secret"
    ),
    "HS256 dev token": lambda: make_token(),
}


@pytest.mark.parametrize("forge", RS256_BAD_TOKENS.values(), ids=RS256_BAD_TOKENS.keys())
def test_rs256_service_refuses(rs_client: TestClient, forge: Any) -> None:
    """Each defective token, algorithm confusion included, answers the same 401."""
    _assert_refused(rs_client, forge())


def test_token_workspaces_claim_narrows_access(client: TestClient) -> None:
    """A token limited to ws-b cannot use ws-a even though its user is a member there."""
    narrowed = {"Authorization": f"Bearer {make_token('carol', workspaces=['ws-b'])}"}
    assert client.get("/api/notes/?workspaceId=ws-b", headers=narrowed).status_code == 200
    assert client.get("/api/notes/?workspaceId=ws-a", headers=narrowed).status_code == 404


def test_rs256_configuration_is_checked_at_construction(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> None:
    """RS256 without a JWKS, with a plain-http JWKS URL, or with no RSA key fails at start-up."""
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}))
    for jwks in (None, "http://idp.test/jwks.json", str(empty), str(tmp_path / "missing.json")):
        bad = settings.model_copy(update={"jwt_algorithm": "RS256", "jwt_jwks": jwks})
        with pytest.raises(ConfigurationError):
            create_app(bad, backend=backend)


def test_a_short_hs256_secret_is_refused_at_construction(
    settings: NoteLettSettings, backend: Backend
) -> None:
    """An HS256 secret under 32 bytes fails at start-up."""
    bad = settings.model_copy(update={"jwt_secret": SecretStr("too-short")})
    with pytest.raises(ConfigurationError):
        create_app(bad, backend=backend)
