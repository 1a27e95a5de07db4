"""Job templates in the portal (the real app, both databases): the list, a form made from
a template's parameters, a refusal naming the parameter that changes nothing, a job queued
with the template's files, CSRF, and another tenant's project refused."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.portal import install_portal
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.store.db import Database
from fabbrica.store.models import Job
from fabbrica.store.types import utcnow
from tests.api.test_jobs_api import tenant
from tests.conftest import ADMIN_TOKEN, bearer
from tests.portal.test_pages import csrf_of, sign_in


@pytest.fixture
def site(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[TestClient, Database]]:
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    executors = {"local": LocalExecutor(tmp_path / "jobs", gpus=4)}  # nothing is dispatched
    app = create_app(AppContext(db=db, catalog=full, fixed_executors=executors, files=tmp_path))
    install_portal(app)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client, db


def jobs_in(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_member_runs_a_template_from_its_form(site: tuple[TestClient, Database]) -> None:
    client, db = site
    admin = bearer(ADMIN_TOKEN)
    _, project, _ = tenant(client, admin, "pi@startup.it", 10)
    _, other_project, _ = tenant(client, admin, "other@startup.it", 10)
    sign_in(client, "pi@startup.it")

    listed = client.get("/templates")
    assert listed.status_code == 200
    for name in ("digits-classifier", "llm-pretrain", "llm-finetune-lora"):
        assert f'href="/templates/{name}"' in listed.text
    assert 'href="/templates"' in client.get("/jobs").text  # offered beside a job spec

    form = client.get("/templates/digits-classifier")
    assert form.status_code == 200
    assert re.search(r'name="p_epochs" type="number" value="200" min="1" max="10000"', form.text)
    assert 'name="p_time_limit" value="10m"' in form.text and "training iterations" in form.text
    token = csrf_of(form.text)

    # out of its limits: the page says which parameter, marks its field, queues nothing
    bad = {"csrf": token, "project": project, "p_epochs": "0", "p_gpus": "1"}
    refused = client.post("/templates/digits-classifier", data=bad)
    assert refused.status_code == 422
    assert "parameters.epochs" in refused.text
    assert re.search(r'name="p_epochs"[^>]*aria-invalid="true"', refused.text)
    assert 'value="0"' in refused.text  # what was entered is shown again
    wrong_duration = {**bad, "p_epochs": "5", "p_time_limit": "soon"}
    refused = client.post("/templates/digits-classifier", data=wrong_duration)
    assert refused.status_code == 422 and "parameters.time_limit" in refused.text
    assert jobs_in(db) == 0

    # another tenant's project is refused; without the CSRF token nothing happens
    theirs = client.post(
        "/templates/digits-classifier", data={"csrf": token, "project": other_project}
    )
    assert theirs.status_code in (403, 404, 422) and jobs_in(db) == 0
    assert client.post("/templates/digits-classifier", data={"project": project}).status_code == 403
    assert client.get("/templates/no-such-template").status_code == 404
    assert jobs_in(db) == 0

    good = {"csrf": token, "project": project, "p_epochs": "7", "p_gpus": "1", "p_time_limit": ""}
    queued = client.post("/templates/digits-classifier", data=good, follow_redirects=False)
    assert queued.status_code == 303, queued.text[:2000]
    job_id = int(queued.headers["location"].rsplit("/", 1)[1])
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.gpus == 1 and job.state == "queued"
        spec = json.loads(job.spec)
        assert spec["env"]["EPOCHS"] == "7" and job.time_limit_s == 600
        assert job.workdir_archive is not None
        with tarfile.open(fileobj=io.BytesIO(Path(job.workdir_archive).read_bytes())) as tar:
            assert "train.py" in tar.getnames() and "template.yaml" not in tar.getnames()
    assert client.get(f"/jobs/{job_id}").status_code == 200


def test_a_bool_parameter_unchecked_is_false(site: tuple[TestClient, Database]) -> None:
    client, db = site
    _, project, _ = tenant(client, bearer(ADMIN_TOKEN), "pi@startup.it", 100)
    sign_in(client, "pi@startup.it")
    form = client.get("/templates/llm-pretrain")
    assert re.search(r'type="checkbox" id="p_resume" name="p_resume" value="true"[^>]* checked',
                     form.text)  # fmt: skip
    sent = {"csrf": csrf_of(form.text), "project": project, "p_steps": "3"}
    queued = client.post("/templates/llm-pretrain", data=sent, follow_redirects=False)
    assert queued.status_code == 303, queued.text[:2000]
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        spec = json.loads(job.spec)
    assert spec["env"]["STEPS"] == "3" and not spec.get("resume")
