"""MLflow's JSON shapes (its protobuf messages as JSON) of Fabbrica's rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from fabbrica.services import models, tracking
from fabbrica.store.models import Experiment, ModelVersion, Project, RegisteredModel, Run


def experiment(row: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": str(row.id),
        "name": row.name,
        "artifact_location": f"mlflow-artifacts:/{row.id}",
        "lifecycle_stage": row.lifecycle_stage,
        "creation_time": row.created_ms,
        "last_update_time": row.updated_ms,
        "tags": [],
    }


def run(session: Session, row: Run) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": row.id,
        "run_uuid": row.id,
        "run_name": row.name,
        "experiment_id": str(row.experiment_id),
        "user_id": str(row.user_id),
        "status": row.status,
        "start_time": row.start_ms,
        "artifact_uri": tracking.artifact_uri(row),
        "lifecycle_stage": row.lifecycle_stage,
    }
    if row.end_ms is not None:
        info["end_time"] = row.end_ms
    metrics = [
        {"key": k, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step}
        for k, m in tracking.latest_metrics(session, row.id).items()
    ]
    return {
        "info": info,
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in tracking.params(session, row.id).items()],
            "tags": [{"key": k, "value": v} for k, v in tracking.tags(session, row.id).items()],
        },
        "inputs": {},
    }


def model_version(
    session: Session, row: ModelVersion, model: RegisteredModel | None = None
) -> dict[str, Any]:
    model = model or models.model_of(session, row)
    named = [a for a, v in models.aliases(session, model.id).items() if v == row.version]
    out: dict[str, Any] = {
        "name": model.name,
        "version": str(row.version),
        "creation_timestamp": row.created_ms,
        "last_updated_timestamp": row.created_ms,
        "current_stage": "None",
        "description": row.description,
        "source": row.source,
        "status": "READY",
        "aliases": named,
        "tags": [] if row.job_id is None else [{"key": "fabbrica.job", "value": str(row.job_id)}],
    }
    if row.run_id is not None:
        out["run_id"] = row.run_id
    return out


def registered_model(session: Session, row: RegisteredModel) -> dict[str, Any]:
    project = session.get(Project, row.project_pk)
    assert project is not None
    latest = models.versions(session, project, row.name, limit=1)
    return {
        "name": row.name,
        "creation_timestamp": row.created_ms,
        "last_updated_timestamp": row.updated_ms,
        "description": row.description,
        "latest_versions": [model_version(session, v, row) for v in latest],
        "aliases": [
            {"alias": a, "version": str(v)} for a, v in models.aliases(session, row.id).items()
        ],
        "tags": [],
    }
