"""Every route × every object × every identity: access exactly where membership allows.

Objects: alice's note (ws-a), bob's note (ws-b), a note id that does not exist, and for
the listing and creation routes the workspaces ws-a, ws-b and one that does not exist.
Identities: alice (member of ws-a), bob (member of ws-b), alice with a token narrowed to
ws-b, a stranger with a valid token, no token, a garbage token, and JWT attacks on the
RS256 service (a key embedded in the header, a ``jku``/``x5u`` pointing elsewhere).

* allowed only for a member whose token allows the workspace;
* "not yours" answers byte for byte like "does not exist" (404, same body and headers);
* no token and a bad token answer the same 401;
* a refused write leaves the database exactly as it was (notes and dek_store rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from notelett.backend import Backend
from tests import figures
from tests.support.fixtures import on_every_store

from .conftest import make_token
from .test_auth import UNAUTHORIZED, jwks_file, rs_client  # noqa: F401 - fixtures

MISSING_NOTE = "0" * 32
IDENTITIES: dict[str, Callable[[], str | None]] = {
    "alice": lambda: make_token("alice"),
    "bob": lambda: make_token("bob"),
    "alice narrowed to ws-b": lambda: make_token("alice", workspaces=["ws-b"]),
    "stranger": lambda: make_token("mallory"),
    "no token": lambda: None,
    "garbage token": lambda: "garbage.token.value",
}
MEMBERSHIP = {
    "alice": {"ws-a"},
    "bob": {"ws-b"},
    "alice narrowed to ws-b": set(),
    "stranger": set(),
}
ROUTES = ["create", "list", "read", "replace", "delete"]


def _snapshot(backend: Backend) -> Any:
    """Every live note of the workspaces the matrix names (a note marked for deletion drops
    out), the rows of their DEKs, and the DEKs per MEK version (a DEK made for a refused
    note counts), read through the repositories, so on every store."""
    notes = []
    for workspace in ("ws-a", "ws-b", "ws-none"):
        cursor = None
        while True:
            page = backend.notes.list_workspace(workspace, cursor=cursor, limit=100)
            notes += [
                (n.id, n.workspace_id, n.title, n.body, n.tags, n.dek_id, n.revision)
                for n in page.notes
            ]
            if (cursor := page.cursor) is None:
                break
    store = backend.runtime.dek_store
    deks = store.get_many(sorted({note[5] for note in notes if note[5] is not None}))
    rows = sorted((r.dek_id, r.mek_version, r.wrapped, r.revision) for r in deks.values())
    return sorted(notes), rows, store.count_by_version()


def _shape(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


def _call(client: TestClient, route: str, target: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"title": "written", "body": "by the matrix", "tags": []}
    if route == "create":
        return client.post("/api/notes", json={**body, "workspaceId": target}, headers=headers)
    if route == "list":
        return client.get("/api/notes/", params={"workspaceId": target}, headers=headers)
    if route == "read":
        return client.get(f"/api/notes/{target}", headers=headers)
    if route == "replace":
        return client.put(f"/api/notes/{target}", json=body, headers={**headers, "If-Match": "*"})
    return client.delete(f"/api/notes/{target}", headers=headers)


@on_every_store
@pytest.mark.parametrize("route", ROUTES)
def test_route_object_identity_matrix(
    client: TestClient,
    backend: Backend,
    create_note: Callable[..., dict[str, Any]],
    route: str,
) -> None:
    """For each identity: allowed exactly for members; 'not yours' == 'missing'; refusals
    write nothing. (One database per route and store, fresh notes per identity: a database
    per cell costs about a second on PostgreSQL and Cosmos DB.)"""
    tried = 0
    for identity in IDENTITIES:
        tried += _check_identity(client, backend, create_note, route, identity)
    figures.record("api security", matrix_requests=tried)


def _check_identity(
    client: TestClient,
    backend: Backend,
    create_note: Callable[..., dict[str, Any]],
    route: str,
    identity: str,
) -> int:
    """One row of the matrix, on notes of its own; the requests it made."""
    notes = {
        "ws-a": create_note(user="alice", workspace="ws-a")["id"],
        "ws-b": create_note(user="bob", workspace="ws-b")["id"],
    }
    token = IDENTITIES[identity]()
    by_note = route in ("read", "replace", "delete")
    objects = {
        "ws-a": notes["ws-a"] if by_note else "ws-a",
        "ws-b": notes["ws-b"] if by_note else "ws-b",
        "missing": MISSING_NOTE if by_note else "ws-none",
    }
    missing = _call(client, route, objects["missing"], token)
    tried = 1
    for workspace in ("ws-a", "ws-b"):
        before = _snapshot(backend)
        response = _call(client, route, objects[workspace], token)
        tried += 1
        allowed = workspace in MEMBERSHIP.get(identity, set())
        where = (route, identity, workspace, response.text)
        if token is None or identity == "garbage token":
            assert response.status_code == 401, where
            assert _shape(response) == _shape(missing), where
        elif allowed:
            assert response.status_code in (200, 201, 204), where
        else:
            assert response.status_code == 404, where
            assert _shape(response) == _shape(missing), (
                "'not yours' differs from 'missing'",
                where,
            )
        if not allowed:
            assert _snapshot(backend) == before, ("a refused request changed the database", where)
    return tried


ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _attacker_token(**headers: Any) -> str:
    return make_token(key=ATTACKER, algorithm="RS256", headers={"kid": "key-1", **headers})


HEADER_ATTACKS = {
    "key embedded in the header (jwk)": lambda: _attacker_token(
        jwk=json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ATTACKER.public_key()))
    ),
    "jku pointing at the attacker": lambda: _attacker_token(jku="https://evil.test/jwks.json"),
    "x5u pointing at the attacker": lambda: _attacker_token(x5u="https://evil.test/cert.pem"),
    "kid path traversal": lambda: _attacker_token(kid="../../../../dev/null"),
}


@pytest.mark.parametrize("forge", HEADER_ATTACKS.values(), ids=HEADER_ATTACKS.keys())
def test_rs256_service_ignores_keys_named_in_the_token(
    rs_client: TestClient,  # noqa: F811 - the fixture imported above
    forge: Callable[[], str],
) -> None:
    """A token cannot bring its own key: jwk, jku, x5u and odd kids all answer 401."""
    response = rs_client.get(
        "/api/notes/?workspaceId=ws-a", headers={"Authorization": f"Bearer {forge()}"}
    )
    assert response.status_code == 401 and response.json() == UNAUTHORIZED
    figures.record("api security", jwt_attacks_refused=1)
