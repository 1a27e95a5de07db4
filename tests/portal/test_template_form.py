"""The portal's template form: pick a template, fill in its parameters, submit; a value the
template refuses shows the form again naming the parameter, and nothing is queued."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.portal import install_portal
from fabbrica.store.db import Database
from fabbrica.store.models import Job
from tests.conftest import ADMIN_TOKEN, bearer
from tests.portal.test_applicant_pages import PLAYGROUND, application, new_founder, stored
from tests.portal.test_pages import csrf_of


@pytest.fixture
def portal(ctx: AppContext, tmp_path: Path) -> Iterator[TestClient]:
    """The real app with the portal, keeping files (a template's folder is uploaded)."""
    app = create_app(replace(ctx, files=tmp_path))
    install_portal(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        agent = client.post("/api/v1/agents/it4lia/token", headers=bearer(ADMIN_TOKEN))
        assert agent.status_code == 201, agent.text  # it4lia runs jobs (its agent registered)
        yield client


def test_a_member_submits_a_job_from_a_template_form(portal: TestClient, db: Database) -> None:
    project = new_founder(portal, "templates@startup.it")
    listed = portal.get("/templates")
    assert listed.status_code == 200
    assert all(
        f'href="/templates/{n}"' in listed.text for n in ("digits-classifier", "llm-pretrain")
    )
    assert 'href="/templates"' in portal.get("/jobs").text
    form = portal.get("/templates/llm-pretrain")
    assert form.status_code == 200
    assert 'name="p.steps"' in form.text and 'value="300"' in form.text and "at most" in form.text
    assert portal.get("/templates/nowhere").status_code == 404
    token = csrf_of(form.text)
    data = {"csrf": token, "project": project, "p.steps": "0", "p.layers": "2"}
    before = stored(db)
    refused = portal.post("/templates/llm-pretrain", data=data)
    assert refused.status_code == 422 and "parameters.steps" in refused.text, refused.text[-3000:]
    assert 'value="0"' in refused.text and 'value="2"' in refused.text  # what was typed stays
    assert stored(db) == before
    assert portal.post("/templates/llm-pretrain", data={**data, "p.steps": "40"}).status_code == 422
    assert stored(db) == before  # no allocation pays for it yet

    sent = portal.post(f"/calls/{PLAYGROUND}/apply", data=application(project, token),
                       follow_redirects=False)  # fmt: skip
    assert sent.status_code == 303
    good = {**data, "p.steps": "40", "p.resume": "false"}
    made = portal.post("/templates/llm-pretrain", data=good, follow_redirects=False)
    assert made.status_code == 303, re.findall(r"role=\"alert\">(.*)</p>", made.text)
    job_id = int(made.headers["location"].rsplit("/", 1)[1])
    with db.session() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        spec = json.loads(job.spec)
        assert job.workdir_archive  # the template's folder
    assert spec["env"]["STEPS"] == "40" and spec["env"]["N_LAYER"] == "2"
    assert spec["resume"] is False and spec["checkpoint"]["dir"] == "checkpoints/"
    assert portal.post("/templates/llm-pretrain", data={**data, "csrf": ""}).status_code == 403
