"""Bearer-token authentication with PyJWT: pinned algorithms, every registered claim checked.

One algorithm is accepted at a time, the one configured: ``HS256`` with a shared secret
(development, ``notelett token``) or ``RS256`` with a JWKS (production identity
providers; a file, or an ``https://`` URL read through :class:`jwt.PyJWKClient`). A token
signed with any other algorithm, ``alg: none`` included, is refused before its signature
is looked at, so an RS256 public key can never be used as an HS256 secret. ``exp``,
``nbf``, ``iss``, ``aud`` and ``sub`` are required; ``exp``, ``nbf`` and ``iat`` must be
JSON numbers (a numeric string is refused). Every refusal answers the same 401;
the reason is logged at INFO, never the token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from field_encrypt import ConfigurationError
from notelett.errors import AuthenticationError, IdentityProviderError
from notelett.settings import NoteLettSettings, hs256_secret

log = logging.getLogger("notelett.auth")

REQUIRED_CLAIMS = ("exp", "nbf", "iss", "aud", "sub")
NUMERIC_DATES = ("exp", "nbf", "iat")
"""RFC 7519 NumericDate claims: JSON numbers. PyJWT also accepts numeric strings; we do not."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling. ``workspaces``, when the token has that claim, narrows its reach."""

    user_id: str
    workspaces: frozenset[str] | None = None

    def may_use(self, workspace_id: str) -> bool:
        """Whether the token itself allows ``workspace_id`` (membership is checked apart)."""
        return self.workspaces is None or workspace_id in self.workspaces


class TokenVerifier:
    """Checks bearer tokens for one issuer and audience under one pinned algorithm."""

    def __init__(
        self,
        *,
        algorithm: str,
        issuer: str,
        audience: str,
        leeway_seconds: float = 30.0,
        secret: bytes | None = None,
        jwks: str | None = None,
    ) -> None:
        if algorithm not in ("HS256", "RS256"):
            raise ConfigurationError(f"unsupported JWT algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self._secret = secret
        self._keys: dict[str, Any] = {}
        self._client: jwt.PyJWKClient | None = None
        if algorithm == "HS256":
            if not secret or len(secret) < 32:
                raise ConfigurationError("HS256 needs a secret of at least 32 bytes")
        elif not jwks:
            raise ConfigurationError("RS256 needs NOTELETT_JWT_JWKS (a JWKS file or https URL)")
        elif jwks.startswith("https://"):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300, timeout=5)
        elif "://" in jwks:
            raise ConfigurationError("NOTELETT_JWT_JWKS must be a file path or an https:// URL")
        else:
            self._keys = _load_jwks_file(Path(jwks))

    def __repr__(self) -> str:
        return f"TokenVerifier(algorithm={self.algorithm!r}, issuer={self.issuer!r})"

    @property
    def remote(self) -> bool:
        """Whether verifying may fetch keys over the network (then run it off the event loop)."""
        return self._client is not None

    def verify(self, token: str) -> Principal:
        """The caller named by ``token``; :class:`AuthenticationError` for any defect."""
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS endpoint unreachable: %s", type(exc).__name__)
            raise IdentityProviderError() from None
        except jwt.PyJWTError as exc:
            log.info("bearer token refused: %s", type(exc).__name__)
            raise AuthenticationError() from None
        for name in NUMERIC_DATES:
            value = claims.get(name)
            if value is not None and (isinstance(value, bool) or not _is_number(value)):
                log.info("bearer token refused: %s is not a NumericDate", name)
                raise AuthenticationError()
        subject = claims.get("sub")
        workspaces = claims.get("workspaces")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError()
        if workspaces is not None and not (
            isinstance(workspaces, list) and all(isinstance(w, str) for w in workspaces)
        ):
            raise AuthenticationError()
        return Principal(
            user_id=subject,
            workspaces=frozenset(workspaces) if workspaces is not None else None,
        )

    def _key_for(self, token: str) -> Any:
        if self.algorithm == "HS256":
            return self._secret
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidKeyError("unknown kid")
        return key


def verifier_from_settings(settings: NoteLettSettings) -> TokenVerifier:
    """The verifier ``settings`` describe; fails at start-up when they are incomplete."""
    return TokenVerifier(
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
        secret=hs256_secret(settings) if settings.jwt_algorithm == "HS256" else None,
        jwks=settings.jwt_jwks,
    )


def mint_dev_token(
    settings: NoteLettSettings,
    *,
    user_id: str,
    workspaces: list[str] | None = None,
    ttl_seconds: int = 3600,
    now: dt.datetime | None = None,
) -> str:
    """An HS256 development token for ``user_id``, valid for ``ttl_seconds``."""
    if settings.jwt_algorithm != "HS256":
        raise ConfigurationError(
            f"notelett token mints HS256 development tokens, but this service is configured "
            f"for NOTELETT_JWT_ALGORITHM={settings.jwt_algorithm}: get a token from its "
            "identity provider, or unset NOTELETT_JWT_ALGORITHM for local development"
        )
    issued = now or dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + dt.timedelta(seconds=ttl_seconds),
    }
    if workspaces:
        claims["workspaces"] = workspaces
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")


def _load_jwks_file(path: Path) -> dict[str, Any]:
    """RSA public keys by ``kid`` from a JWKS file; other key types are ignored."""
    try:
        data = json.loads(path.read_text())
        keys = {}
        for entry in data["keys"]:
            if entry.get("kty") != "RSA" or not entry.get("kid"):
                continue
            if entry.get("alg", "RS256") != "RS256" or entry.get("use", "sig") != "sig":
                continue
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256").key
    except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigurationError(f"NOTELETT_JWT_JWKS: cannot read a JWKS from {path}") from exc
    if not keys:
        raise ConfigurationError(f"NOTELETT_JWT_JWKS: {path} holds no RS256 signing keys")
    return keys
