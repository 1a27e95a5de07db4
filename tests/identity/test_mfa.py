"""Multi-factor authentication where it matters (both databases): on a factory whose
catalog entry requires MFA, an operator signed in without it (`fabbrica login`) may not
decide a proposal, and is told to sign in again with MFA; after `fabbrica login --mfa`
(the provider asked for its `acr`, the one-time code given) the same decision goes through;
the portal's step-up asks the provider for MFA and records it on the session."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fabbrica.catalog.model import Catalog
from fabbrica.store.models import PortalSession, Project, Proposal
from fabbrica.store.types import utcnow
from tests.cli.server import clean_env
from tests.conftest import ADMIN_TOKEN, bearer
from tests.identity.conftest import Portal, http_sign_in
from tests.identity.test_cli_login import cli_login
from tests.oidc_provider import MFA, SFA, Account

API = "/api/v1"
FACTORY = "it4lia"


@pytest.fixture
def catalog(catalog: Catalog) -> Catalog:
    """The shipped catalog, with FACTORY requiring MFA."""
    factories = tuple(
        f.model_copy(update={"require_mfa": True}) if f.id == FACTORY else f
        for f in catalog.factories
    )
    return catalog.model_copy(update={"factories": factories})


def submitted_proposal(portal: Portal) -> int:
    admin = bearer(ADMIN_TOKEN)
    with httpx.Client(base_url=f"{portal.url}{API}") as api:
        pi = api.post("/users", headers=admin, json={"email": "pi@startup.it", "name": "PI"})
        h = bearer(pi.json()["token"])
        org = api.post("/organisations", headers=h, json={
            "name": "Startup srl", "country": "IT", "type": "startup"}).json()  # fmt: skip
        project = api.post("/projects", headers=h, json={"title": "LLM", "org_id": org["id"]})
        project_id = project.json()["id"]
    with portal.ctx.db.session() as session:
        pk = session.scalars(select(Project.pk).where(Project.id == project_id)).one()
        row = Proposal(project_pk=pk, call_id=f"{FACTORY}-large-scale", state="submitted",
                       gpu_hours=1000, months=6, abstract="a model", created_by=pi.json()["id"],
                       created_at=utcnow(), submitted_at=utcnow())  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def test_an_operator_decides_only_after_signing_in_with_mfa(portal: Portal, tmp_path: Path) -> None:
    account = portal.account(name="Olga Operator", otp="424242")
    body = {"email": account.email, "name": "Olga", "role": "operator", "factories": [FACTORY]}
    made = httpx.post(f"{portal.url}{API}/users", headers=bearer(ADMIN_TOKEN), json=body)
    assert made.status_code == 201, made.text
    proposal = submitted_proposal(portal)
    env = clean_env(FABBRICA_CONFIG=str(tmp_path / "config.json"))
    decision = {"decision": "reject", "reason": "out of scope"}

    cli_login(portal, account, env)  # one factor
    token = json.loads((tmp_path / "config.json").read_text())["token"]
    url = f"{portal.url}{API}/proposals/{proposal}/decision"
    refused = httpx.post(url, headers=bearer(token), json=decision)
    assert refused.status_code == 403, refused.text
    assert "requires multi-factor authentication" in refused.json()["error"]["message"]
    assert "fabbrica login --mfa" in refused.json()["error"]["message"]

    cli_login(portal, account, env, "--mfa")  # step-up: the provider asked for the code
    token = json.loads((tmp_path / "config.json").read_text())["token"]
    decided = httpx.post(url, headers=bearer(token), json=decision)
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "rejected"


def test_the_portal_steps_up_with_acr_values(portal: Portal) -> None:
    account = portal.account(otp="777000")
    without_code = Account(**{**account.__dict__, "otp": None})  # the code not typed in
    assert http_sign_in(portal, without_code).status_code == 200
    assert http_sign_in(portal, account, mfa=True).status_code == 200
    with pytest.raises(AssertionError, match="needs your one-time code"):
        http_sign_in(portal, without_code, mfa=True)  # the provider insists on the code
    with portal.ctx.db.session() as session:
        rows = session.execute(
            select(PortalSession.mfa, PortalSession.acr).order_by(PortalSession.id)
        ).all()
    assert [tuple(r) for r in rows] == [(False, SFA), (True, MFA)]
