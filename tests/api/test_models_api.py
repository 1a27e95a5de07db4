"""Tracking and the model registry through HTTP on SQLite and PostgreSQL: MLflow's API per
project (a member's token, a job's token and its limits), a version's lineage, Fabbrica's
/models routes, tenancy (404 everywhere for another organisation) and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity, models, tracking
from fabbrica.services.access.calls import seed_calls
from fabbrica.store.db import Database
from fabbrica.store.models import Job, Project, User
from fabbrica.store.types import utcnow
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.api.test_jobs_api import spec, tenant
from tests.conftest import ADMIN_TOKEN, bearer


@dataclass
class World:
    api: TestClient
    db: Database
    pi: Headers
    project: str
    other: Headers
    other_project: str

    def ml(self, project: str | None = None) -> str:
        return f"/mlflow/{project or self.project}/api/2.0/mlflow"


@pytest.fixture
def world(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[World]:
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    # a factory to submit to; no dispatcher runs: jobs stay queued
    executors = {"local": LocalExecutor(tmp_path / "jobs", gpus=4)}
    ctx = AppContext(db=db, catalog=full, fixed_executors=executors, files=tmp_path)
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        pi, project, _ = tenant(api, admin, "pi@startup.it", 10)
        other, other_project, _ = tenant(api, admin, "other@startup.it", 10)
        yield World(api, db, pi, project, other, other_project)


def a_job(w: World) -> tuple[int, str]:
    """A queued job of the PI's project and the token its run would hold."""
    made = w.api.post(
        f"{API}/jobs", headers=w.pi, json={"spec": spec("true", gpus=1), "project": w.project}
    )
    assert made.status_code == 201, made.text
    with w.db.session() as session:
        job = session.get_one(Job, made.json()["id"])
        return job.id, tracking.issue_job_token(session, job, utcnow())


def run_and_version(w: World, headers: Headers) -> tuple[str, dict[str, Any]]:
    run = w.api.post(f"{w.ml()}/runs/create", headers=headers, json={"experiment_id": "0"})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    logged = w.api.post(f"{w.ml()}/runs/log-batch", headers=headers, json={
        "run_id": run_id, "params": [{"key": "lr", "value": "0.1"}],
        "metrics": [{"key": "accuracy", "value": 0.5, "timestamp": 1, "step": 0},
                    {"key": "accuracy", "value": 0.9, "timestamp": 2, "step": 1}]})  # fmt: skip
    assert logged.status_code == 200, logged.text
    body = {"name": "m", "source": "s3://x/model", "run_id": run_id}
    version = w.api.post(f"{w.ml()}/model-versions/create", headers=headers, json=body)
    assert version.status_code == 200, version.text
    return run_id, version.json()["model_version"]


def test_a_job_token_registers_a_version_whose_lineage_names_the_job(world: World) -> None:
    job_id, secret = a_job(world)
    run_id, version = run_and_version(world, bearer(secret))
    assert version["version"] == "1" and version["run_id"] == run_id
    assert {"key": "fabbrica.job", "value": str(job_id)} in version["tags"]
    shown = world.api.get(f"{API}/models/m/versions/1", headers=world.pi).json()
    assert shown["job"] == job_id and shown["metrics"] == {"accuracy": 0.9}
    assert shown["params"] == {"lr": "0.1"} and shown["spec"]["run"] == "true"
    assert shown["gpu_hours"] is None and shown["compute"]["flop"] is None  # not ended yet
    assert shown["datasets"] == [] and shown["factory"] is None
    listed = world.api.get(f"{API}/models", headers=world.pi).json()
    assert [(m["name"], m["version"], m["job"]) for m in listed] == [("m", 1, job_id)]
    card = world.api.get(f"{API}/models/m/versions/1/card", headers=world.pi)
    assert card.headers["content-type"].startswith("text/markdown")
    assert f"Training job: {job_id}" in card.text and "- accuracy: 0.9" in card.text

    # the job's token reaches its own project only, and only while the job has not ended
    other = world.api.post(
        f"{world.ml(world.other_project)}/experiments/search", headers=bearer(secret), json={}
    )
    assert other.status_code == 404, other.text
    with world.db.session() as session:
        session.get_one(Job, job_id).state = "succeeded"
    ended = world.api.post(f"{world.ml()}/experiments/search", headers=bearer(secret), json={})
    assert ended.status_code == 401 and ended.json()["error_code"] == "UNAUTHENTICATED"


def test_another_organisation_reaches_none_of_it(world: World) -> None:
    run_id, _ = run_and_version(world, world.pi)
    alias = world.api.post(f"{world.ml()}/registered-models/alias", headers=world.pi,
                           json={"name": "m", "alias": "champion", "version": "1"})  # fmt: skip
    assert alias.status_code == 200, alias.text
    before = snapshot(world.db)
    ml, o = world.ml(), world.other
    reaches = [
        ("GET", f"{ml}/runs/get", {"run_id": run_id}, None),
        ("POST", f"{ml}/runs/search", None, {}),
        ("POST", f"{ml}/experiments/search", None, {}),
        ("GET", f"{ml}/experiments/get", {"experiment_id": "0"}, None),
        ("POST", f"{ml}/runs/log-metric", None, {"run_id": run_id, "key": "a", "value": 1}),
        ("POST", f"{ml}/runs/set-tag", None, {"run_id": run_id, "key": "a", "value": "b"}),
        ("GET", f"{ml}/registered-models/get", {"name": "m"}, None),
        ("GET", f"{ml}/registered-models/search", {}, None),
        ("GET", f"{ml}/model-versions/get", {"name": "m", "version": "1"}, None),
        ("GET", f"{ml}/registered-models/alias", {"name": "m", "alias": "champion"}, None),
        ("POST", f"{ml}/registered-models/alias", None,
         {"name": "m", "alias": "x", "version": "1"}),
        ("POST", f"{ml}/model-versions/create", None, {"name": "m", "source": "x"}),
        ("GET", f"/mlflow/{world.project}/api/2.0/mlflow-artifacts/artifacts",
         {"path": f"1/{run_id}/artifacts"}, None),
        ("GET", f"{API}/models/m/versions/1", {"project": world.project}, None),
        ("GET", f"{API}/models/m/versions/champion/card", {}, None),
        ("GET", f"{API}/models/m/versions/1/files", {}, None),
    ]  # fmt: skip
    for method, url, params, body in reaches:
        got = world.api.request(method, url, headers=o, params=params, json=body)
        assert got.status_code == 404, (method, url, got.text)
    assert world.api.get(f"{API}/models", headers=o).json() == []
    # their own project's MLflow: their runs, none of ours
    theirs = world.api.get(
        f"{world.ml(world.other_project)}/runs/get", headers=o, params={"run_id": run_id}
    )
    assert theirs.status_code == 404 and theirs.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert snapshot(world.db) == before


def test_bad_input_names_the_field_and_changes_nothing(world: World) -> None:
    run_and_version(world, world.pi)
    before = snapshot(world.db)
    for body, field in (({"name": "bad name!", "source": "x"}, "name"),
                        ({"source": "x"}, "name"),
                        ({"name": "m", "source": "x", "run_id": "nope"}, "run_id")):  # fmt: skip
        got = world.api.post(f"{world.ml()}/model-versions/create", headers=world.pi, json=body)
        assert got.status_code in (400, 404), got.text
        assert field in got.json()["message"] or got.status_code == 404, got.text
    taken = world.api.post(f"{world.ml()}/registered-models/create", headers=world.pi,
                           json={"name": "m"})  # fmt: skip
    assert taken.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    alias = world.api.post(f"{world.ml()}/registered-models/alias", headers=world.pi,
                           json={"name": "m", "alias": "v3", "version": "1"})  # fmt: skip
    assert alias.status_code == 400 and "alias" in alias.json()["message"]
    assert_error(world.api.get(f"{API}/models/m/versions/0", headers=world.pi), 422, "invalid",
                 "model")  # fmt: skip
    unauthenticated = world.api.post(f"{world.ml()}/runs/search", json={})
    assert unauthenticated.status_code == 401
    assert snapshot(world.db) == before


def test_register_version_for_other_services(world: World) -> None:
    """The service other parts call (a job's checkpoint): a version from a job, no run."""
    job_id, _ = a_job(world)
    with world.db.session() as session:
        project = session.scalars(select(Project).where(Project.id == world.project)).one()
        user = session.get_one(User, session.get_one(Job, job_id).user_id)
        made = models.register_version(
            session,
            project,
            user,
            "ckpt",
            source="file:///ckpt",
            job_id=job_id,
            now=utcnow(),
        )
        assert (made.version, made.job_id, made.run_id) == (1, job_id, None)
        again = models.register_version(session, project, user, "ckpt", source="x", now=utcnow())
        assert again.version == 2 and again.job_id is None
    shown = world.api.get(f"{API}/models/ckpt/versions/1", headers=world.pi).json()
    assert shown["job"] == job_id and shown["source"] == "file:///ckpt"
