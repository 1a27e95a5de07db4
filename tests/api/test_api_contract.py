"""What the OpenAPI document promises, the server does (issue 10, finding 11): a 405 names
the methods the path takes, request scalars are read as the schema types them, a body that
cannot be decoded is a 400 and a spec's time limit of the wrong type a 422, all in the one
error shape. schemathesis checks the rest against a live server (tests/cli)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import API_PREFIX, create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.model import Catalog
from fabbrica.store.db import Database
from tests.api.helpers import API, JSON, Headers, assert_error
from tests.conftest import bearer


def _operations(api: TestClient) -> dict[str, set[str]]:
    paths: dict[str, Any] = api.get("/openapi.json").json()["paths"]
    return {path: {m.upper() for m in ops} for path, ops in paths.items()}


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("PUT", "/jobs", "/jobs"),  # GET and POST: two routes
        ("DELETE", "/calls/it4lia-playground", "/calls/{call_id}"),  # GET and PATCH
        ("TRACE", "/health", "/health"),
        ("OPTIONS", "/users", "/users"),
    ],
)
def test_a_405_names_every_method_the_path_takes(
    api: TestClient, admin: Headers, method: str, path: str, template: str
) -> None:
    r = api.request(method, f"{API}{path}", headers=admin)
    assert_error(r, 405, "method_not_allowed")
    allowed = {m.strip() for m in r.headers["Allow"].split(",")}
    assert allowed == _operations(api)[f"{API_PREFIX}{template}"], r.headers["Allow"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_reviews": True}, "min_reviews"),  # a boolean is no integer
        ({"min_reviews": "2"}, "min_reviews"),  # nor is a string
        ({"offered_gpu_hours": "10"}, "offered_gpu_hours"),
        ({"min_average_score": False}, "min_average_score"),
    ],
)
def test_request_scalars_are_read_as_the_schema_types_them(
    api: TestClient, admin: Headers, body: dict[str, Any], field: str
) -> None:
    before = api.get(f"{API}/calls/it4lia-playground", headers=admin).json()
    r = api.patch(f"{API}/calls/it4lia-playground", headers=admin, json=body)
    assert_error(r, 422, "invalid", field)
    assert api.get(f"{API}/calls/it4lia-playground", headers=admin).json() == before


def test_an_integral_number_is_an_integer_and_enums_still_read_from_text(
    api: TestClient, admin: Headers
) -> None:
    r = api.patch(
        f"{API}/calls/it4lia-playground",
        headers=admin,
        json={"min_reviews": 2.0, "decision": "manual", "offered_gpu_hours": 100},
    )
    assert r.status_code == 200, r.text
    assert r.json()["min_reviews"] == 2 and r.json()["decision"] == "manual"
    assert r.json()["offered_gpu_hours"] == 100.0


def test_a_body_that_is_not_utf8_is_a_400_in_the_error_shape(
    api: TestClient, admin: Headers
) -> None:
    r = api.post(f"{API}/tokens", headers={**admin, **JSON}, content=b'{"name": "\xff\xfe"}')
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("limit", [{}, [], 1e308])
def test_a_spec_time_limit_of_the_wrong_kind_is_a_422_not_a_500(
    api: TestClient, admin: Headers, limit: object
) -> None:
    spec = {"name": "x", "run": "true", "resources": {"time_limit": limit}}
    r = api.post(f"{API}/jobs", headers=admin, json={"spec": spec})
    assert_error(r, 422, "invalid", "spec.resources.time_limit")


def test_usage_groups_by_an_enum(api: TestClient, admin: Headers) -> None:
    assert api.get(f"{API}/usage", headers=admin, params={"by": "country"}).status_code == 200
    assert_error(
        api.get(f"{API}/usage", headers=admin, params={"by": "planet"}), 422, "invalid", "by"
    )


@pytest.mark.parametrize("until", [0, 1.9e9, True])
def test_a_date_time_is_text_not_a_number(api: TestClient, admin: Headers, until: object) -> None:
    body = {"action": "extend", "reason": "more time", "until": until}
    r = api.post(f"{API}/allocations/1/changes", headers=admin, json=body)
    assert_error(r, 422, "invalid", "until")


def test_without_its_database_a_replica_answers_503_never_500(catalog: Catalog) -> None:
    # a PostgreSQL that is not there (nothing listens on port 1): the driver fails at once
    away = AppContext(db=Database("postgresql://fabbrica@127.0.0.1:1/gone"), catalog=catalog)
    with TestClient(create_app(away), raise_server_exceptions=False) as client:
        for method, path in [("GET", "/me"), ("GET", "/jobs"), ("POST", "/organisations")]:
            body = {"name": "S", "country": "IT", "type": "startup"} if method == "POST" else None
            r = client.request(method, f"{API}{path}", json=body, headers=bearer("fab_x"))
            assert_error(r, 503, "unavailable")
            assert int(r.headers["Retry-After"]) > 0
        health = client.get(f"{API}/health").json()
        assert health["status"] == "degraded" and health["database"] == "unreachable"
    away.db.dispose()
