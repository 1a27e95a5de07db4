"""A factory that cannot isolate jobs runs the jobs of one user only (services.single_user):
refused at submission with 422 naming why and who holds it, kept off at dispatch; on both
databases, with the real local executor and dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.services.single_user import SingleUser
from fabbrica.store.db import Database
from fabbrica.store.models import Job
from fabbrica.store.types import utcnow
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.api.test_jobs_api import spec, stop_all, tenant
from tests.conftest import ADMIN_TOKEN, bearer

WHY = "the server cannot isolate their jobs (it runs as bob (uid 1000), not as root)"


@dataclass
class Pair:
    api: TestClient
    db: Database
    ctx: AppContext
    executors: dict[str, Any]
    catalog: Catalog
    first: Headers  # holds the oldest live allocation on local
    first_project: str
    second: Headers
    second_project: str

    def submit(self, who: Headers, project: str) -> Any:
        body = {"spec": spec("echo ran"), "project": project}
        return self.api.post(f"{API}/jobs", headers=who, json=body)


@pytest.fixture
def pair(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[Pair]:
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    executors: dict[str, Any] = {"local": LocalExecutor(tmp_path / "jobs", gpus=4)}
    ctx = AppContext(
        db=db,
        catalog=full,
        fixed_executors=executors,
        files=tmp_path,
        single_user=SingleUser(frozenset({"local"}), WHY),
    )
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        first, first_project, _ = tenant(api, admin, "first@one.it", 10)
        second, second_project, _ = tenant(api, admin, "second@two.it", 10)
        yield Pair(api, db, ctx, executors, full, first, first_project, second, second_project)
    stop_all(executors["local"])


def test_the_holder_runs_and_anyone_else_is_refused_naming_why_and_who(pair: Pair) -> None:
    before = snapshot(pair.db)
    refused = pair.submit(pair.second, pair.second_project)
    assert_error(refused, 422, "invalid", "placement.factories")
    message = refused.json()["error"]["message"]
    assert message.startswith(f"local runs the jobs of one user only, because {WHY}")
    assert "first@one.it" in message and pair.first_project in message
    assert "oldest live one" in message
    assert snapshot(pair.db) == before  # nothing stored
    accepted = pair.submit(pair.first, pair.first_project)
    assert accepted.status_code == 201, accepted.text


def test_the_setting_names_the_holder(pair: Pair) -> None:
    pair.ctx.single_user = SingleUser(frozenset({"local"}), WHY, "Second@Two.it")
    assert pair.submit(pair.second, pair.second_project).status_code == 201
    refused = pair.submit(pair.first, pair.first_project)
    assert_error(refused, 422, "invalid", "placement.factories")
    assert "FABBRICA_LOCAL_USER gives it to second@two.it" in refused.json()["error"]["message"]
    pair.ctx.single_user = SingleUser(frozenset({"local"}), WHY, "ghost@nowhere.it")
    refused = pair.submit(pair.second, pair.second_project)
    assert "ghost@nowhere.it, who has no account here" in refused.json()["error"]["message"]


def test_dispatch_never_places_another_users_job_there(pair: Pair) -> None:
    # both queued while nothing was held (as before a restart without root)
    pair.ctx.single_user = SingleUser()
    other = pair.submit(pair.second, pair.second_project).json()["id"]
    mine = pair.submit(pair.first, pair.first_project).json()["id"]
    rule = SingleUser(frozenset({"local"}), WHY)
    dispatcher = Dispatcher(pair.db, pair.catalog, pair.executors, utcnow, single_user=rule)
    dispatcher.step()
    with pair.db.session() as session:
        states = {j: session.get_one(Job, j).state for j in (other, mine)}
    assert states[other] == "queued" and states[mine] != "queued"
    without = Dispatcher(pair.db, pair.catalog, pair.executors, utcnow)
    without.step()  # the same queue, no rule: it is placed (the rule alone held it back)
    with pair.db.session() as session:
        assert session.get_one(Job, other).state != "queued"
