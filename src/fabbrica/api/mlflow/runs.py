"""MLflow's experiments and runs: /api/2.0/mlflow/experiments/..., /runs/..., /metrics/..."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from fabbrica.api.deps import ContextDep, SessionDep
from fabbrica.api.mlflow import present
from fabbrica.api.mlflow.deps import TrackerDep, body_int, body_pairs, body_text
from fabbrica.core.errors import InvalidInput
from fabbrica.services import tracking

router = APIRouter()
JsonBody = Annotated[dict[str, Any], Body(default_factory=dict)]


@router.post("/experiments/create")
def create_experiment(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    made = tracking.create_experiment(session, who, body_text(body, "name"), ctx.clock())
    return {"experiment_id": str(made.id)}


@router.get("/experiments/get")
def get_experiment(
    who: TrackerDep,
    session: SessionDep,
    ctx: ContextDep,
    experiment_id: Annotated[str, Query()],
) -> dict[str, Any]:
    found = tracking.get_experiment(session, who, experiment_id, ctx.clock())
    return {"experiment": present.experiment(found)}


@router.get("/experiments/get-by-name")
def get_experiment_by_name(
    who: TrackerDep, session: SessionDep, experiment_name: Annotated[str, Query()]
) -> dict[str, Any]:
    found = tracking.experiment_by_name(session, who, experiment_name)
    return {"experiment": present.experiment(found)}


@router.post("/experiments/search")
def search_experiments(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    limit = body_int(body, "max_results", 1000) or 1000
    found = tracking.search_experiments(session, who, limit)
    return {"experiments": [present.experiment(e) for e in found]}


@router.post("/runs/create")
def create_run(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    run = tracking.create_run(
        session,
        who,
        body_text(body, "experiment_id", required=False) or "0",
        name=body_text(body, "run_name", required=False) or None,
        start_ms=body_int(body, "start_time"),
        tags=dict(body_pairs(body, "tags")),
        now=ctx.clock(),
    )
    return {"run": present.run(session, run)}


@router.get("/runs/get")
def get_run(
    who: TrackerDep,
    session: SessionDep,
    run_id: Annotated[str | None, Query()] = None,
    run_uuid: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    found = tracking.get_run(session, who, run_id or run_uuid or "")
    return {"run": present.run(session, found)}


@router.post("/runs/update")
def update_run(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    run = tracking.get_run(session, who, _run_id(body))
    tracking.update_run(
        session,
        run,
        body_text(body, "status", required=False) or None,
        body_int(body, "end_time"),
        body_text(body, "run_name", required=False) or None,
    )
    return {"run_info": present.run(session, run)["info"]}


def _run_id(body: dict[str, Any]) -> str:
    return body_text(body, "run_id", required=False) or body_text(body, "run_uuid")


@router.post("/runs/log-metric")
def log_metric(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    run = tracking.get_run(session, who, _run_id(body))
    _metric(session, run, body, ctx.clock())
    return {}


def _metric(session: Any, run: Any, item: dict[str, Any], now: Any) -> None:
    if "value" not in item:
        raise InvalidInput("missing", "value")
    stamp = body_int(item, "timestamp") or tracking.ms(now)
    tracking.log_metric(
        session, run, body_text(item, "key"), item["value"], stamp, body_int(item, "step", 0) or 0
    )


@router.post("/runs/log-parameter")
def log_param(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    run = tracking.get_run(session, who, _run_id(body))
    tracking.log_param(
        session, run, body_text(body, "key"), body_text(body, "value", required=False)
    )
    return {}


@router.post("/runs/set-tag")
def set_tag(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    run = tracking.get_run(session, who, _run_id(body))
    tracking.set_tag(session, run, body_text(body, "key"), body_text(body, "value", required=False))
    return {}


@router.post("/runs/log-batch")
def log_batch(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    run = tracking.get_run(session, who, _run_id(body))
    for key, value in body_pairs(body, "params"):
        tracking.log_param(session, run, key, value)
    for key, value in body_pairs(body, "tags"):
        tracking.set_tag(session, run, key, value)
    metrics = body.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise InvalidInput("a list of {key, value, timestamp, step}", "metrics")
    for item in metrics:
        _metric(session, run, item, ctx.clock())
    return {}


@router.post("/runs/log-inputs")
def log_inputs(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    tracking.get_run(session, who, _run_id(body))  # data set inputs: Fabbrica's own lineage
    return {}


@router.post("/runs/search")
def search_runs(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    ids = body.get("experiment_ids") or []
    if not isinstance(ids, list):
        raise InvalidInput("a list of experiment ids", "experiment_ids")
    limit = body_int(body, "max_results", 1000) or 1000
    found = tracking.search_runs(session, who, [str(i) for i in ids], ctx.clock(), limit)
    return {"runs": [present.run(session, r) for r in found]}


@router.get("/metrics/get-history")
def metric_history(
    who: TrackerDep,
    session: SessionDep,
    metric_key: Annotated[str, Query()],
    run_id: Annotated[str | None, Query()] = None,
    run_uuid: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    run = tracking.get_run(session, who, run_id or run_uuid or "")
    rows = tracking.metric_history(session, run, metric_key)
    return {
        "metrics": [
            {"key": m.key, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step}
            for m in rows
        ]
    }


@router.post("/logged-models/search")
def search_logged_models(who: TrackerDep) -> dict[str, Any]:
    """MLflow 3's logged models are not kept: runs' artifacts and registered versions are."""
    return {"models": []}
