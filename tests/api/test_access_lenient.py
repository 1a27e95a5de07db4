"""What people type is understood: sectors and GPU models by name or a part of it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import API, Headers, assert_error
from tests.conftest import bearer


def applicant(api: TestClient, admin: Headers, sector: str) -> tuple[Headers, str, str]:
    user = api.post(f"{API}/users", headers=admin, json={"email": "a@startup.it", "name": "A"})
    headers = bearer(user.json()["token"])
    org = api.post(
        f"{API}/organisations",
        headers=headers,
        json={"name": "S", "country": "it", "type": "Startup", "sector": sector},
    )
    assert org.status_code == 201, org.text
    project = api.post(
        f"{API}/projects", headers=headers, json={"title": "T", "org_id": org.json()["id"]}
    )
    return headers, org.json()["sector"], project.json()["id"]


def test_sector_country_and_type_as_people_write_them(api: TestClient, admin: Headers) -> None:
    _, sector, _ = applicant(api, admin, "Health")
    assert sector == "health-life-sciences"
    orgs = api.get(f"{API}/organisations", headers=admin).json()
    assert (orgs[0]["country"], orgs[0]["type"]) == ("IT", "startup")
    bad = api.post(
        f"{API}/organisations",
        headers=admin,
        json={"name": "X", "country": "IT", "type": "startup", "sector": "basket weaving"},
    )
    assert_error(bad, 422, "invalid", "sector")
    assert "health-life-sciences" in bad.json()["error"]["message"]


def test_gpu_model_by_name(api: TestClient, admin: Headers) -> None:
    headers, _, project = applicant(api, admin, "manufacturing")
    body = {"project_id": project, "call_id": "it4lia-playground", "gpu_hours": 100,
            "months": 1, "declare_civilian_ai_act": True}  # fmt: skip
    ok = api.post(f"{API}/proposals", headers=headers, json={**body, "gpu_model": "NVIDIA A100"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["gpu_model"] == "a100" and ok.json()["state"] == "accepted"
    assert ok.json()["allocation"]["gpu_model"] == "a100"
    refused = api.post(f"{API}/proposals", headers=headers, json={**body, "gpu_model": "H100"})
    assert_error(refused, 422, "invalid", "gpu_model")
    assert "does not offer h100" in refused.json()["error"]["message"]
