"""The REST API through HTTP: the real app on SQLite and PostgreSQL, no mocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica import __version__
from fabbrica.catalog.model import Catalog
from tests.api.helpers import API, JSON, Headers, assert_error
from tests.conftest import ADMIN_TOKEN, Clock, bearer


def create_user(
    api: TestClient, admin: Headers, email: str = "alice@example.org", role: str = "user"
) -> dict[str, Any]:
    r = api.post(f"{API}/users", headers=admin, json={"email": email, "name": "A", "role": role})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def emails(api: TestClient, admin: Headers) -> list[str]:
    r = api.get(f"{API}/users", headers=admin)
    assert r.status_code == 200, r.text
    return [u["email"] for u in r.json()]


def all_tokens(api: TestClient, admin: Headers) -> list[dict[str, Any]]:
    r = api.get(f"{API}/tokens", headers=admin, params={"user_id": 0})
    assert r.status_code == 200, r.text
    tokens: list[dict[str, Any]] = r.json()
    return tokens


# --- health, auth, catalog ------------------------------------------------------------------


def test_health_needs_no_token(api: TestClient) -> None:
    r = api.get(f"{API}/health")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["version"] == __version__


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("fab_not-a-real-token"),
        bearer(ADMIN_TOKEN + "x"),
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Token {ADMIN_TOKEN}"},
    ],
    ids=["none", "wrong", "almost", "no-scheme", "no-token", "basic", "other-scheme"],
)
def test_factories_need_a_valid_bearer_token(api: TestClient, headers: Headers) -> None:
    assert_error(api.get(f"{API}/factories", headers=headers), 401, "unauthenticated")
    assert_error(api.get(f"{API}/factories/it4lia", headers=headers), 401, "unauthenticated")
    assert_error(api.get(f"{API}/access-modes", headers=headers), 401, "unauthenticated")


def test_list_factories(api: TestClient, admin: Headers, catalog: Catalog) -> None:
    r = api.get(f"{API}/factories", headers=admin)
    assert r.status_code == 200
    ids = [f["id"] for f in r.json()]
    assert len(ids) == 19
    assert ids == [f.id for f in catalog.factories]
    it4lia = next(f for f in r.json() if f["id"] == "it4lia")
    assert (it4lia["country"], it4lia["systems"]) == ("IT", 2)
    assert it4lia["gpus"] == catalog.factory("it4lia").gpus  # type: ignore[union-attr]


def test_factory_detail_has_systems_and_partitions(
    api: TestClient, admin: Headers, catalog: Catalog
) -> None:
    r = api.get(f"{API}/factories/it4lia", headers=admin)
    assert r.status_code == 200
    body = r.json()
    expected = catalog.factory("it4lia")
    assert expected is not None
    assert body["id"] == "it4lia"
    assert [s["id"] for s in body["systems"]] == [s.id for s in expected.systems]
    booster = next(s for s in body["systems"] if s["name"] == "Leonardo Booster")
    part = next(p for p in booster["partitions"] if p["id"] == "boost_usr_prod")
    assert (part["gpu_model"], part["gpus_per_node"]) == ("a100", 4)
    assert part["gpus"] == part["gpus_per_node"] * part["nodes"]
    assert part["billing"]["rule"] == "per_gpu"


def test_unknown_factory_is_404(api: TestClient, admin: Headers) -> None:
    r = api.get(f"{API}/factories/atlantis", headers=admin)
    assert_error(r, 404, "not_found", "factory_id")
    assert "atlantis" in r.json()["error"]["message"]


def test_access_modes(api: TestClient, admin: Headers, catalog: Catalog) -> None:
    r = api.get(f"{API}/access-modes", headers=admin)
    assert r.status_code == 200
    modes = r.json()
    assert [m["id"] for m in modes] == [m.id for m in catalog.access_modes]
    assert [m["code"] for m in modes] == [m.code for m in catalog.access_modes]
    assert len(modes) > 0


# --- users ----------------------------------------------------------------------------------


def test_create_user_returns_a_one_time_token(api: TestClient, admin: Headers) -> None:
    user = create_user(api, admin, email="Alice@Example.ORG")
    secret = user["token"]
    assert secret.startswith("fab_")
    assert (user["email"], user["role"], user["active"]) == ("alice@example.org", "user", True)
    me = api.get(f"{API}/me", headers=bearer(secret))
    assert me.status_code == 200
    assert (me.json()["id"], me.json()["email"]) == (user["id"], "alice@example.org")
    assert "token" not in me.json()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    for r in (
        api.get(f"{API}/users", headers=admin),
        api.get(f"{API}/users/{user['id']}", headers=admin),
        api.get(f"{API}/tokens", headers=admin, params={"user_id": 0}),
        api.get(f"{API}/tokens", headers=bearer(secret)),
    ):
        assert r.status_code == 200
        assert secret not in r.text and digest not in r.text
    assert "alice@example.org" in emails(api, admin)


def test_a_plain_user_cannot_create_users(api: TestClient, admin: Headers) -> None:
    plain = create_user(api, admin)
    r = api.post(
        f"{API}/users",
        headers=bearer(plain["token"]),
        json={"email": "eve@example.org", "name": "E"},
    )
    assert_error(r, 403, "forbidden")
    assert emails(api, admin) == ["admin@localhost", "alice@example.org"]
    assert_error(api.get(f"{API}/users", headers=bearer(plain["token"])), 403, "forbidden")


GOOD = {"email": "eve@example.org", "name": "Eve"}


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"json": {**GOOD, "nickname": "e"}}, "nickname"),
        ({"json": {"email": "eve@example.org"}}, "name"),
        ({"json": {"name": "Eve"}}, "email"),
        ({"json": {**GOOD, "role": "god"}}, "role"),
        ({"json": {**GOOD, "email": "not-an-email"}}, "email"),
        ({"json": {**GOOD, "email": 42}}, "email"),
        ({"json": {**GOOD, "name": "x" * 10_240}}, "name"),
        ({"json": {**GOOD, "name": "   "}}, "name"),
        ({"content": b'{"email": "\xff@example.org", "name": "Eve"}', "headers": JSON}, None),
        ({"json": [GOOD]}, None),
        ({"content": b"", "headers": JSON}, None),
        pytest.param(
            {"content": b'{"email": "eve@example.org", "name": ', "headers": JSON},
            None,
        ),
        pytest.param(
            {"json": {**GOOD, "name": "Eve\u0000"}},
            "name",
        ),
        pytest.param(
            {"json": {**GOOD, "email": "e\u0000ve@example.org"}},
            "email",
        ),
    ],
    ids=[
        "unknown-field", "no-name", "no-email", "role-god", "bad-email", "email-number",
        "10kb-name", "blank-name", "non-utf8", "json-list", "empty-body", "truncated-json",
        "nul-in-name", "nul-in-email",
    ],
)  # fmt: skip
def test_create_user_rejects_bad_input(
    api: TestClient, admin: Headers, request_kwargs: dict[str, Any], field: str | None
) -> None:
    kwargs = {**request_kwargs, "headers": {**admin, **request_kwargs.get("headers", {})}}
    r = api.post(f"{API}/users", **kwargs)
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code, r.json()["error"]["code"], field)
    assert r.json()["error"]["code"] in {"bad_request", "invalid"}
    assert emails(api, admin) == ["admin@localhost"]
    assert len(all_tokens(api, admin)) == 1


def test_duplicate_email_is_409(api: TestClient, admin: Headers) -> None:
    create_user(api, admin, email="bob@example.org")
    r = api.post(f"{API}/users", headers=admin, json={"email": "BOB@example.org", "name": "B"})
    assert_error(r, 409, "conflict", "email")
    assert emails(api, admin) == ["admin@localhost", "bob@example.org"]


def test_get_user_self_or_admin_only(api: TestClient, admin: Headers) -> None:
    alice = create_user(api, admin)
    bob = create_user(api, admin, email="bob@example.org")
    r = api.get(f"{API}/users/{alice['id']}", headers=bearer(alice["token"]))
    assert r.status_code == 200 and r.json()["email"] == "alice@example.org"
    r = api.get(f"{API}/users/{bob['id']}", headers=bearer(alice["token"]))
    assert_error(r, 403, "forbidden")
    r = api.get(f"{API}/users/{bob['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["email"] == "bob@example.org"
    assert_error(
        api.get(f"{API}/users/{bob['id'] + 100}", headers=admin), 404, "not_found", "user_id"
    )


# --- tokens ---------------------------------------------------------------------------------


def test_create_list_and_revoke_a_token(api: TestClient, admin: Headers, clock: Clock) -> None:
    alice = create_user(api, admin)
    auth = bearer(alice["token"])
    r = api.post(f"{API}/tokens", headers=auth, json={"name": "laptop"})
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made["token"]
    assert secret.startswith("fab_") and secret != alice["token"]
    assert (made["user_id"], made["name"], made["revoked_at"]) == (alice["id"], "laptop", None)
    assert made["hint"] == secret[:8]

    clock.advance(minutes=5)
    assert api.get(f"{API}/me", headers=bearer(secret)).json()["id"] == alice["id"]
    r = api.get(f"{API}/tokens", headers=auth)
    assert r.status_code == 200
    listed = {t["id"]: t for t in r.json()}
    assert len(listed) == 2 and made["id"] in listed
    assert all("token" not in t and t["hint"] for t in listed.values())
    assert secret not in r.text and alice["token"] not in r.text
    assert listed[made["id"]]["last_used_at"] == clock().isoformat().replace("+00:00", "Z")

    r = api.delete(f"{API}/tokens/{made['id']}", headers=auth)
    assert r.status_code == 200
    revoked_at = r.json()["revoked_at"]
    assert revoked_at == clock().isoformat().replace("+00:00", "Z")
    assert_error(api.get(f"{API}/me", headers=bearer(secret)), 401, "unauthenticated")
    clock.advance(hours=1)
    again = api.delete(f"{API}/tokens/{made['id']}", headers=auth)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked_at
    assert api.get(f"{API}/me", headers=auth).status_code == 200  # the first token still works


def test_a_user_cannot_touch_another_users_tokens(api: TestClient, admin: Headers) -> None:
    alice, bob = create_user(api, admin), create_user(api, admin, email="bob@example.org")
    bobs = api.get(f"{API}/tokens", headers=bearer(bob["token"])).json()
    assert [t["user_id"] for t in bobs] == [bob["id"]]
    alices = api.get(f"{API}/tokens", headers=bearer(alice["token"])).json()
    assert bobs[0]["id"] not in [t["id"] for t in alices]

    r = api.delete(f"{API}/tokens/{bobs[0]['id']}", headers=bearer(alice["token"]))
    assert_error(r, 404, "not_found", "token_id")
    # someone else's token answers exactly like a token that does not exist
    missing = api.delete(f"{API}/tokens/{bobs[0]['id'] + 1000}", headers=bearer(alice["token"]))
    assert missing.json()["error"]["message"].replace(str(bobs[0]["id"] + 1000), "N") == (
        r.json()["error"]["message"].replace(str(bobs[0]["id"]), "N")
    )
    assert api.get(f"{API}/me", headers=bearer(bob["token"])).status_code == 200
    assert all(t["revoked_at"] is None for t in all_tokens(api, admin))

    for user_id in (bob["id"], 0):
        r = api.get(f"{API}/tokens", headers=bearer(alice["token"]), params={"user_id": user_id})
        assert_error(r, 403, "forbidden")
    r = api.post(f"{API}/tokens", headers=bearer(alice["token"]), json={"user_id": bob["id"]})
    assert_error(r, 403, "forbidden")
    assert len(all_tokens(api, admin)) == 3


def test_admin_creates_a_token_for_another_user(api: TestClient, admin: Headers) -> None:
    bob = create_user(api, admin, email="bob@example.org")
    r = api.post(f"{API}/tokens", headers=admin, json={"user_id": bob["id"], "name": "ci"})
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == bob["id"]
    assert api.get(f"{API}/me", headers=bearer(r.json()["token"])).json()["id"] == bob["id"]
    listed = api.get(f"{API}/tokens", headers=admin, params={"user_id": bob["id"]}).json()
    assert sorted(t["name"] for t in listed) == ["ci", "default"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": -3}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"secret": "mine"}, "secret"),
    ],
)
def test_create_token_rejects_bad_input(
    api: TestClient, admin: Headers, body: dict[str, Any], field: str
) -> None:
    assert_error(api.post(f"{API}/tokens", headers=admin, json=body), 422, "invalid", field)
    assert len(all_tokens(api, admin)) == 1


def test_an_expired_token_is_rejected(api: TestClient, admin: Headers, clock: Clock) -> None:
    r = api.post(f"{API}/tokens", headers=admin, json={"expires_in_days": 1})
    assert r.status_code == 201
    made = r.json()
    assert made["expires_at"] is not None
    clock.advance(hours=23)
    assert api.get(f"{API}/me", headers=bearer(made["token"])).status_code == 200
    clock.advance(hours=1, seconds=1)
    assert_error(api.get(f"{API}/me", headers=bearer(made["token"])), 401, "unauthenticated")
    assert api.get(f"{API}/me", headers=admin).status_code == 200


@pytest.mark.parametrize("big", [2**31, 2**63], ids=["2^31", "2^63"])
@pytest.mark.parametrize("call", ["get-user", "revoke", "list", "create-for"])
def test_out_of_range_ids_are_refused_with_the_field(
    api: TestClient,
    admin: Headers,
    big: int,
    call: str,
) -> None:
    r = {
        "get-user": lambda: api.get(f"{API}/users/{big}", headers=admin),
        "revoke": lambda: api.delete(f"{API}/tokens/{big}", headers=admin),
        "list": lambda: api.get(f"{API}/tokens", headers=admin, params={"user_id": big}),
        "create-for": lambda: api.post(f"{API}/tokens", headers=admin, json={"user_id": big}),
    }[call]()
    field = "token_id" if call == "revoke" else "user_id"
    assert_error(r, 422, "invalid", field)


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_lists_the_paths_and_a_bearer_scheme(api: TestClient) -> None:
    r = api.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    for path in ("health", "factories", "factories/{factory_id}", "users", "tokens"):
        assert f"{API}/{path}" in spec["paths"], path
    schemes = spec["components"]["securitySchemes"]
    bearer_names = [
        name for name, s in schemes.items() if s["type"] == "http" and s["scheme"] == "bearer"
    ]
    assert bearer_names
    secured = spec["paths"][f"{API}/factories"]["get"]["security"]
    assert {name for req in secured for name in req} <= set(bearer_names)
    assert "security" not in spec["paths"][f"{API}/health"]["get"]


def test_oversized_bodies_are_refused_before_they_are_read(api: TestClient, admin: Headers) -> None:
    big = {"email": "big@example.org", "name": "x" * (2 * 1024 * 1024)}
    r = api.post(f"{API}/users", headers=admin, json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    users = api.get(f"{API}/users", headers=admin).json()
    assert "big@example.org" not in [u["email"] for u in users]


def test_a_streamed_body_past_the_limit_is_cut_off(api: TestClient, admin: Headers) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "s@example.org", "name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = api.post(f"{API}/users", headers={**admin, **JSON}, content=chunks())
    assert r.status_code == 413
    users = api.get(f"{API}/users", headers=admin).json()
    assert "s@example.org" not in [u["email"] for u in users]
