"""The access policy through HTTP, on both databases (issue 10, findings 8, 9 and 10):
one live allocation per project and Playground call, GPU-hours below one GPU-minute or not
finite refused, countries checked against ISO 3166-1 (plus the EU's EL and UK), and no
bidirectional control or invisible character in any name or text. Every refusal is a 4xx
in the error shape naming the field, and changes no row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.store.db import Database
from tests.api.helpers import API, JSON, Headers, Response, assert_error, snapshot
from tests.conftest import bearer

Json = Any


def ok(r: Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    return r.json()


@dataclass(frozen=True)
class Tenant:
    pi: Headers
    org: int
    project: str


def user(api: TestClient, admin: Headers, email: str, role: str = "user", **extra: Any) -> Json:
    body = {"email": email, "name": email.split("@")[0], "role": role, **extra}
    return ok(api.post(f"{API}/users", headers=admin, json=body), 201)


def tenant(api: TestClient, admin: Headers, email: str, country: str = "IT") -> Tenant:
    pi = bearer(user(api, admin, email)["token"])
    body = {"name": f"{email} srl", "country": country, "type": "startup"}
    org = ok(api.post(f"{API}/organisations", headers=pi, json=body), 201)
    body = {"title": "LLM", "org_id": org["id"]}
    project = ok(api.post(f"{API}/projects", headers=pi, json=body), 201)["id"]
    return Tenant(pi, org["id"], project)


def application(t: Tenant, call: str = "it4lia-playground", **extra: Any) -> Json:
    return {"project_id": t.project, "call_id": call, "gpu_hours": 100, "months": 1,
            "abstract": "A model.", "declare_civilian_ai_act": True, **extra}  # fmt: skip


def apply(api: TestClient, t: Tenant, call: str = "it4lia-playground", **extra: Any) -> Response:
    r: Response = api.post(f"{API}/proposals", headers=t.pi, json=application(t, call, **extra))
    return r


@pytest.fixture
def startup(api: TestClient, admin: Headers) -> Tenant:
    return tenant(api, admin, "ceo@startup.it")


@pytest.fixture
def op(api: TestClient, admin: Headers) -> Headers:
    return bearer(user(api, admin, "op@cineca.it", "operator", factories=["it4lia"])["token"])


# --- finding 10: one live allocation per project and Playground call --------------------------


def test_a_second_playground_application_is_refused_naming_the_live_allocation(
    api: TestClient, db: Database, admin: Headers, startup: Tenant, op: Headers
) -> None:
    first = ok(apply(api, startup), 201)
    allocation = first["allocation"]["id"]
    for hours in (100, 1e-7, 5000):  # as filed: again and again, one of 1e-7 GPU-hours
        before = snapshot(db)
        r = apply(api, startup, gpu_hours=hours)
        assert snapshot(db) == before
        if hours < 1:
            assert_error(r, 422, "invalid", "gpu_hours")
            continue
        assert_error(r, 409, "conflict", "call_id")
        message = r.json()["error"]["message"]
        assert f"allocation {allocation}" in message and "top it up" in message
    # a draft may wait; its submission is refused while the allocation is live
    draft = ok(apply(api, startup, submit=False), 201)
    r = api.post(f"{API}/proposals/{draft['id']}/submit?declare_civilian_ai_act=true",
                 headers=startup.pi)  # fmt: skip
    assert_error(r, 409, "conflict", "call_id")
    # more hours come from the operator
    body = {"action": "top_up", "reason": "more", "gpu_hours": 50}
    topped = ok(api.post(f"{API}/allocations/{allocation}/changes", headers=op, json=body))
    assert topped["gpu_hours"] == 150
    # another call, and another project, are not held back
    assert ok(apply(api, startup, "jaif-playground"), 201)["state"] == "accepted"
    other = tenant(api, admin, "cto@other.it")
    assert ok(apply(api, other), 201)["state"] == "accepted"
    # once the allocation has ended, the project may apply again
    body = {"action": "terminate", "reason": "done"}
    ok(api.post(f"{API}/allocations/{allocation}/changes", headers=op, json=body))
    assert ok(apply(api, startup), 201)["state"] == "accepted"
    listed = ok(api.get(f"{API}/allocations?project_id={startup.project}", headers=startup.pi))
    live = [a for a in listed if a["call"] == "it4lia-playground" and a["state"] == "active"]
    assert len(live) == 1


def test_a_pending_playground_application_holds_back_a_second_one(
    api: TestClient, db: Database, startup: Tenant, op: Headers
) -> None:
    body = {"decision": "manual"}
    ok(api.patch(f"{API}/calls/it4lia-playground", headers=op, json=body))
    waiting = ok(apply(api, startup), 201)
    assert waiting["state"] == "submitted"
    before = snapshot(db)
    r = apply(api, startup)
    assert_error(r, 409, "conflict", "call_id")
    assert f"proposal {waiting['id']}" in r.json()["error"]["message"]
    assert snapshot(db) == before
    # withdrawn, it holds nothing back
    ok(api.post(f"{API}/proposals/{waiting['id']}/withdraw", headers=startup.pi))
    assert ok(apply(api, startup), 201)["state"] == "submitted"


# --- finding 10 and 8 (API side): amounts below the billable unit, or not numbers -------------


def test_gpu_hours_below_one_gpu_minute_are_refused_everywhere(
    api: TestClient, db: Database, admin: Headers, startup: Tenant, op: Headers
) -> None:
    before = snapshot(db)
    for hours in (1e-7, 0.0166, 0.01):
        r = apply(api, startup, gpu_hours=hours)
        assert_error(r, 422, "invalid", "gpu_hours")
        assert "one GPU-minute" in r.json()["error"]["message"]
    assert snapshot(db) == before
    allocation = ok(apply(api, startup, gpu_hours=0.02), 201)["allocation"]  # above: fine
    assert allocation["gpu_hours"] == 0.02
    url = f"{API}/allocations/{allocation['id']}/changes"
    before = snapshot(db)
    r = api.post(url, headers=op, json={"action": "top_up", "reason": "x", "gpu_hours": 1e-7})
    assert_error(r, 422, "invalid", "gpu_hours")
    other = tenant(api, admin, "cto@other.it")
    review = ok(apply(api, other, "it4lia-benchmark", gpu_hours=500, months=2), 201)
    before = snapshot(db)
    body = {"decision": "accept", "gpu_hours": 1e-7}
    r = api.post(f"{API}/proposals/{review['id']}/decision", headers=op, json=body)
    assert_error(r, 422, "invalid", "gpu_hours")
    r = api.patch(f"{API}/calls/it4lia-playground", headers=op, json={"offered_gpu_hours": 1e-7})
    assert_error(r, 422, "invalid", "offered_gpu_hours")
    assert snapshot(db) == before


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "-1", "0"])
def test_numbers_that_are_not_finite_positive_amounts_are_a_422_naming_the_field(
    api: TestClient, db: Database, startup: Tenant, op: Headers, number: str
) -> None:
    """`fabbrica apply --gpu-hours nan` sends NaN in JSON (Python's json writes it): the
    server answers 422 naming the field, wherever a body holds a number."""
    allocation = ok(apply(api, startup), 201)["allocation"]["id"]
    h = {**startup.pi, **JSON}
    sent: list[tuple[str, str, Headers, str, str]] = [
        ("POST", "/proposals", h, f'{{"project_id": "{startup.project}", '
         f'"call_id": "jaif-playground", "gpu_hours": {number}, "months": 1, '
         '"declare_civilian_ai_act": true}', "gpu_hours"),
        ("POST", f"/allocations/{allocation}/changes", {**op, **JSON},
         f'{{"action": "top_up", "reason": "x", "gpu_hours": {number}}}', "gpu_hours"),
        ("PATCH", "/calls/it4lia-playground", {**op, **JSON},
         f'{{"offered_gpu_hours": {number}, "min_average_score": {number}}}',
         "offered_gpu_hours"),
    ]  # fmt: skip
    before = snapshot(db)
    for method, url, headers, body, field in sent:
        r = api.request(method, f"{API}{url}", headers=headers, content=body.encode())
        if number == "0" and field == "offered_gpu_hours":  # 0 offers nothing: allowed...
            assert_error(r, 422, "invalid", "min_average_score")  # ...a score of 0 is not
            continue
        assert_error(r, 422, "invalid", field)
    assert snapshot(db) == before


# --- finding 9: countries ---------------------------------------------------------------------


@pytest.mark.parametrize("country", ["ZZ", "XX", "AA", "QM", "EU", "Ω1", "I"])
def test_a_country_that_is_no_iso_3166_code_is_refused(
    api: TestClient, db: Database, startup: Tenant, country: str
) -> None:
    before = snapshot(db)
    body = {"name": "Nowhere srl", "country": country, "type": "startup"}
    r = api.post(f"{API}/organisations", headers=startup.pi, json=body)
    assert_error(r, 422, "invalid", "country")
    assert snapshot(db) == before


COUNTRIES = [("EL", True), ("GR", True), ("UK", True), ("GB", True), ("CH", True), ("US", False)]


@pytest.mark.parametrize(("country", "eligible"), COUNTRIES)
def test_the_eu_codes_el_and_uk_are_countries_and_eligible_like_gr_and_gb(
    api: TestClient, admin: Headers, country: str, eligible: bool
) -> None:
    who = tenant(api, admin, "ceo@abroad.example", country=country)
    r = apply(api, who)
    if eligible:
        assert ok(r, 201)["state"] == "accepted"
    else:
        assert_error(r, 422, "invalid", "country")


# --- finding 9: bidirectional controls and invisible characters in names and texts ------------

HIDDEN = ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u200e", "\u200f", "\u061c",
          "\u2066", "\u2067", "\u2068", "\u2069", "\u200b", "\u200d", "\u2060", "\ufeff",
          "\u00ad", "\U000e0041"]  # fmt: skip


@dataclass(frozen=True)
class Target:
    name: str
    field: str
    send: Callable[[TestClient, dict[str, Any], str], Response]


def _post(
    url: str, who: str, body: Callable[[dict[str, Any], str], Json]
) -> Callable[[TestClient, dict[str, Any], str], Response]:
    def send(api: TestClient, w: dict[str, Any], text: str) -> Response:
        r: Response = api.post(f"{API}{url.format(**w)}", headers=w[who], json=body(w, text))
        return r

    return send


def _patch_call(api: TestClient, w: dict[str, Any], text: str) -> Response:
    body = {"state": "closed", "reason": text}
    r: Response = api.patch(f"{API}/calls/it4lia-fast-lane", headers=w["op"], json=body)
    return r


TARGETS = [
    Target("user-name", "name", _post("/users", "admin",
           lambda w, t: {"email": "new@x.it", "name": t})),
    Target("org-name", "name", _post("/organisations", "pi",
           lambda w, t: {"name": t, "country": "IT", "type": "startup"})),
    Target("project-title", "title", _post("/projects", "pi",
           lambda w, t: {"title": t, "org_id": w["org"]})),
    Target("call-reason", "reason", _patch_call),
    Target("proposal-abstract", "abstract", _post("/proposals", "pi",
           lambda w, t: {**w["application"], "abstract": f"Line one.\n{t}"})),
    Target("decision-reason", "reason", _post("/proposals/{benchmark}/decision", "op",
           lambda w, t: {"decision": "reject", "reason": t})),
    Target("final-report", "text", _post("/allocations/{alloc}/final-report", "pi",
           lambda w, t: {"text": f"The model reached its target.\n{t}"})),
    Target("token-name", "name", _post("/tokens", "pi", lambda w, t: {"name": t})),
]  # fmt: skip


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_bidi_controls_and_invisible_characters_are_refused_in_every_name_and_text(
    api: TestClient, db: Database, admin: Headers, startup: Tenant, op: Headers, target: Target
) -> None:
    alloc = ok(apply(api, startup), 201)["allocation"]["id"]
    benchmark = ok(apply(api, startup, "it4lia-benchmark", gpu_hours=500, months=2), 201)["id"]
    w = {"admin": admin, "pi": startup.pi, "op": op, "org": startup.org, "alloc": alloc,
         "benchmark": benchmark}  # fmt: skip
    w["application"] = application(startup, "jaif-playground")
    before = snapshot(db)
    for char in HIDDEN:
        text = f"Acme{char}gpj.exe"  # as filed: U+202E shows this as "Acmeexe.jpg"
        r = target.send(api, w, text)
        assert_error(r, 422, "invalid", target.field)
        assert f"U+{ord(char):04X}" in r.json()["error"]["message"]
        assert snapshot(db) == before, (target.name, hex(ord(char)))
    # the same text without it is taken (right-to-left scripts themselves are welcome)
    r = target.send(api, w, "Acme gpj.exe \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627")
    assert r.status_code in (200, 201), r.text
