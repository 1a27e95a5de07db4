"""A factory whose catalog entry requires multi-factor authentication (`require_mfa`):
a sign-in without it (every admin-made API token here) acts on nothing of that factory as
its operator, and no job of it is placed there; other factories are untouched."""

from __future__ import annotations

import json

from sqlalchemy import select

from fabbrica.catalog.model import Catalog
from fabbrica.store.models import Job
from tests.api.helpers import assert_error, snapshot
from tests.api.test_operator_scope import World, ok, send, world

__all__ = ["world"]  # the operator-scope federation, with it4lia requiring MFA

MFA = "it4lia"


def requiring_mfa(w: World) -> World:
    """The federation, built, then with MFA's catalog entry requiring MFA."""
    ctx = w.api.app.state.ctx  # type: ignore[attr-defined]
    catalog: Catalog = ctx.catalog
    factories = tuple(
        f.model_copy(update={"require_mfa": True}) if f.id == MFA else f for f in catalog.factories
    )
    ctx.catalog = catalog.model_copy(update={"factories": factories})
    return w


def test_an_operator_without_mfa_acts_on_nothing_of_a_factory_that_requires_it(
    world: World,
) -> None:
    w = requiring_mfa(world)
    it4lia, jaif = w.refs[MFA], w.refs["jaif"]
    op = w.actors["op-it4lia"]
    before = snapshot(w.db)
    for method, url, body in [
        ("PATCH", f"/calls/{MFA}-playground", {"state": "closed", "reason": "x"}),
        ("POST", f"/allocations/{it4lia.alloc}/changes", {"action": "suspend", "reason": "x"}),
        ("POST", f"/proposals/{it4lia.review}/decision", {"decision": "accept"}),
        ("POST", f"/proposals/{it4lia.review}/reviewers", {"reviewer_id": w.ids["rev3"]}),
        ("POST", f"/agents/{MFA}/token", None),
    ]:
        r = send(w, method, url, op, body)
        assert_error(r, 403, "forbidden")
        assert "multi-factor" in r.json()["error"]["message"], (url, r.text)
        assert snapshot(w.db) == before, url
    # what the operator may still see, and what another factory's operator still does
    assert ok(send(w, "GET", f"/proposals/{it4lia.review}", op))["id"] == it4lia.review
    closed = send(w, "PATCH", "/calls/jaif-playground", w.actors["op-jaif"],
                  {"state": "closed", "reason": "x"})  # fmt: skip
    assert closed.status_code == 200, closed.text
    suspended = send(w, "POST", f"/allocations/{jaif.alloc}/changes", w.actors["op-jaif"],
                     {"action": "suspend", "reason": "x"})  # fmt: skip
    assert suspended.status_code == 200, suspended.text


def test_jobs_of_a_sign_in_without_mfa_are_never_placed_at_that_factory(world: World) -> None:
    w = requiring_mfa(world)
    pi_it4lia, pi_jaif = w.actors[f"pi-{MFA}"], w.actors["pi-jaif"]
    only_there = {"name": "x", "run": "true",
                  "resources": {"time_limit": "1m", "gpus": 1, "gpu_model": "a100"}}  # fmt: skip
    before = snapshot(w.db)
    r = send(w, "POST", "/jobs", pi_it4lia,
             {"spec": only_there, "project": w.refs[MFA].project})  # fmt: skip
    assert_error(r, 403, "forbidden")
    assert "multi-factor" in r.json()["error"]["message"], r.text
    assert snapshot(w.db) == before
    anywhere = {"name": "y", "run": "true", "resources": {"time_limit": "1m", "gpus": 1}}
    made = send(w, "POST", "/jobs", pi_jaif, {"spec": anywhere, "project": w.refs["jaif"].project})
    assert made.status_code == 201, made.text
    with w.db.session() as session:
        stored = session.scalars(select(Job.spec).where(Job.id == made.json()["id"])).one()
    factories = json.loads(stored)["placement"]["factories"]
    assert MFA not in factories and "jaif" in factories, factories
