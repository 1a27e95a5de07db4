"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from fabbrica.store.db import Database
from fabbrica.store.migrate import alembic_config, current_revision, head_revision, upgrade
from fabbrica.store.models import Base, BudgetAlert, OperatorFactory
from tests.conftest import bearer


def test_migrated_schema_matches_the_models(db: Database) -> None:
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_existing_operators_get_the_factories_their_audit_trail_shows(
    api: TestClient, db: Database, admin: dict[str, str]
) -> None:
    """Migration 0005 on a database where operators acted before factories were named: each
    gets the factories of the calls, proposals and allocations it acted on; one that never
    acted gets none (an admin names them). Run as downgrade to 0004, then upgrade."""

    def post(url: str, headers: dict[str, str], body: Any, status: int = 200) -> Any:
        r = api.post(f"/api/v1{url}", headers=headers, json=body)
        assert r.status_code == status, r.text
        return r.json()

    def person(email: str, role: str, factories: list[str] | None = None) -> tuple[int, Any]:
        body = {"email": email, "name": "X", "role": role, "factories": factories or []}
        made = post("/users", admin, body, 201)
        return made["id"], bearer(made["token"])

    pi_id, pi = person("pi@startup.it", "user")
    op_a, a = person("a@ops.eu", "operator", ["it4lia", "jaif", "lumi-aif"])
    op_b, b = person("b@ops.eu", "operator", ["it4lia"])
    op_c, _ = person("c@ops.eu", "operator", ["jaif"])
    rev, _ = person("rev@panel.eu", "reviewer")
    org = post("/organisations", pi, {"name": "S", "country": "IT", "type": "startup"}, 201)
    project = post("/projects", pi, {"title": "T", "org_id": org["id"]}, 201)["id"]
    apply = {"project_id": project, "months": 1, "declare_civilian_ai_act": True}
    play = post("/proposals", pi, {**apply, "call_id": "jaif-playground", "gpu_hours": 10}, 201)
    large = post("/proposals", pi, {**apply, "call_id": "it4lia-large-scale",
                                    "gpu_hours": 60_000, "months": 6}, 201)  # fmt: skip
    r = api.patch("/api/v1/calls/it4lia-fast-lane", headers=a, json={"state": "closed"})
    assert r.status_code == 200, r.text  # a: a call of it4lia
    post(f"/allocations/{play['allocation']['id']}/changes", a,
         {"action": "suspend", "reason": "check"})  # fmt: skip  # a: an allocation at jaif
    post(f"/proposals/{large['id']}/reviewers", b, {"reviewer_id": rev})  # b: it4lia
    post("/calls/jaif-large-scale/reviewers", admin, {"user_id": rev})  # an admin: not kept

    command.downgrade(alembic_config(db.engine), "0004")
    assert not inspect(db.engine).has_table("operator_factories")
    upgrade(db.engine)
    with db.engine.connect() as conn:
        rows = set(conn.execute(select(OperatorFactory.user_id, OperatorFactory.factory_id)))
    assert rows == {(op_a, "it4lia"), (op_a, "jaif"), (op_b, "it4lia")}
    assert op_c not in {user for user, _ in rows} and pi_id not in {u for u, _ in rows}
    seen = api.get(f"/api/v1/users/{op_a}", headers=admin).json()
    assert seen["factories"] == ["it4lia", "jaif"]


def test_expiry_notices_already_sent_become_days_left_alerts(
    api: TestClient, db: Database, admin: dict[str, str]
) -> None:
    """Migration 0006: the 14/3-day notices counted in `expiry_notices_sent` become
    `days_14`/`days_3` alerts (nobody is told twice), and the column goes; the downgrade
    counts them back."""

    def post(url: str, headers: dict[str, str], body: Any) -> Any:
        r = api.post(f"/api/v1{url}", headers=headers, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    pi = bearer(post("/users", admin, {"email": "pi@startup.it", "name": "P"})["token"])
    org = post("/organisations", pi, {"name": "S", "country": "IT", "type": "startup"})
    ids = []
    for title in ("one", "two", "three"):
        project = post("/projects", pi, {"title": title, "org_id": org["id"]})["id"]
        body = {"project_id": project, "months": 1, "gpu_hours": 10,
                "call_id": "it4lia-playground", "declare_civilian_ai_act": True}  # fmt: skip
        proposal = post("/proposals", pi, body)
        ids.append(proposal["allocation"]["id"])

    command.downgrade(alembic_config(db.engine), "0005")
    assert not inspect(db.engine).has_table("budget_alerts")
    with db.engine.begin() as conn:
        for allocation_id, sent in zip(ids, (0, 1, 2), strict=True):
            conn.execute(
                text("UPDATE allocations SET expiry_notices_sent = :sent WHERE id = :id"),
                {"sent": sent, "id": allocation_id},
            )
    upgrade(db.engine)
    with db.engine.connect() as conn:
        rows = set(conn.execute(select(BudgetAlert.allocation_id, BudgetAlert.threshold)))
    assert rows == {(ids[1], "days_14"), (ids[2], "days_14"), (ids[2], "days_3")}
    columns = {c["name"] for c in inspect(db.engine).get_columns("allocations")}
    assert "expiry_notices_sent" not in columns

    command.downgrade(alembic_config(db.engine), "0005")
    with db.engine.connect() as conn:
        counted = conn.execute(text("SELECT id, expiry_notices_sent FROM allocations ORDER BY id"))
        assert list(counted) == list(zip(ids, (0, 1, 2), strict=True))
    upgrade(db.engine)
