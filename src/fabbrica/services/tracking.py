"""Experiment tracking with MLflow's rules, per project: experiments, runs, params, metrics,
tags and run artifacts; and the credential a job reaches them with.

Who asks is a `Tracker`: a member of the project (a Fabbrica token), or a job of the
project (its job token, which also names the job: runs it creates carry the job id, and so
does a model version registered from them: the version's lineage). Anything of another
project is NotFound, as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from fabbrica.core.jobs import JobState
from fabbrica.services.datasets import member_project
from fabbrica.services.identity import authenticate
from fabbrica.store.models import (
    Experiment,
    Job,
    JobToken,
    Project,
    Run,
    RunMetric,
    RunParam,
    RunTag,
    User,
)

JOB_TOKEN_PREFIX = "fabj_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_EXPERIMENT = "Default"
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
ACTIVE = (JobState.QUEUED.value, JobState.DISPATCHED.value, JobState.RUNNING.value)
MAX_KEY = 250
MAX_VALUE = 6000


@dataclass(frozen=True)
class Tracker:
    """Who acts on a project's tracking data: a member, or a job of the project."""

    user: User
    project: Project
    job_id: int | None = None


def ms(now: dt.datetime) -> int:
    return int(now.timestamp() * 1000)


# --- credentials -------------------------------------------------------------------------


def issue_job_token(session: Session, job: Job, now: dt.datetime) -> str:
    """A new secret for the job's run (a launch again replaces the one before)."""
    secret = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    row = session.get(JobToken, job.id)
    if row is None:
        session.add(JobToken(job_id=job.id, token_hash=digest, created_at=now))
    else:
        row.token_hash, row.created_at = digest, now
    session.flush()
    return secret


def job_env(session: Session, job: Job, server_url: str | None, now: dt.datetime) -> dict[str, str]:
    """What a job's run is given to reach its project's tracking and registry with the
    stock `mlflow` client: MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN (a job token).
    Variables the spec sets itself are kept (the spec's env wins)."""
    if not server_url:
        return {}
    spec_env = json.loads(job.spec).get("env") or {}
    env = {
        "MLFLOW_TRACKING_URI": f"{server_url.rstrip('/')}/mlflow/{job.project.id}",
        "MLFLOW_TRACKING_TOKEN": issue_job_token(session, job, now),
        "FABBRICA_PROJECT": job.project.id or "",
    }
    return {k: v for k, v in env.items() if k not in spec_env}


def tracker(session: Session, secret: str, project_id: str, now: dt.datetime) -> Tracker:
    """Who holds `secret`, acting on `project_id`: a job token of a job of that project
    that has not ended, or a member's token (Unauthenticated / NotFound otherwise)."""
    if secret.startswith(JOB_TOKEN_PREFIX):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        row = session.scalar(select(JobToken).where(JobToken.token_hash == digest))
        job = session.get(Job, row.job_id) if row is not None else None
        if job is None or job.state not in ACTIVE:
            raise Unauthenticated("invalid job token, or its job has ended")
        if job.project.id != project_id:
            raise NotFound(f"no project {project_id}", field="project")
        owner = session.get(User, job.user_id)
        if owner is None or not owner.active:
            raise Unauthenticated("the job's owner is deactivated")
        return Tracker(owner, job.project, job.id)
    user = authenticate(session, secret, now=now)
    return Tracker(user, member_project(session, user, project_id, field="project"))


# --- experiments -------------------------------------------------------------------------


def _check_name(value: str | None, field: str, limit: int = 256) -> str:
    text = (value or "").strip()
    if not text or len(text) > limit or any(ord(c) < 32 for c in text):
        raise InvalidInput(f"{field} is 1 to {limit} printable characters", field)
    return text


def create_experiment(session: Session, who: Tracker, name: str, now: dt.datetime) -> Experiment:
    name = _check_name(name, "name")
    if _experiment_named(session, who, name) is not None:
        raise Conflict(f"an experiment named {name!r} exists", field="name")
    experiment = Experiment(
        project_pk=who.project.pk, name=name, created_ms=ms(now), updated_ms=ms(now)
    )
    session.add(experiment)
    session.flush()
    return experiment


def _experiment_named(session: Session, who: Tracker, name: str) -> Experiment | None:
    return session.scalar(
        select(Experiment).where(Experiment.project_pk == who.project.pk, Experiment.name == name)
    )


def default_experiment(session: Session, who: Tracker, now: dt.datetime) -> Experiment:
    """MLflow's experiment "0": the project's "Default", made when first used."""
    found = _experiment_named(session, who, DEFAULT_EXPERIMENT)
    return found or create_experiment(session, who, DEFAULT_EXPERIMENT, now)


def get_experiment(
    session: Session, who: Tracker, experiment_id: str, now: dt.datetime
) -> Experiment:
    """An experiment of the project; "0" is its Default (made when first used)."""
    if experiment_id == "0":
        return default_experiment(session, who, now)
    found = session.get(Experiment, _int_id(experiment_id, "experiment_id"))
    if found is None or found.project_pk != who.project.pk:
        raise NotFound(f"no experiment {experiment_id}", field="experiment_id")
    return found


def experiment_by_name(session: Session, who: Tracker, name: str) -> Experiment:
    found = _experiment_named(session, who, name)
    if found is None:
        raise NotFound(f"no experiment named {name!r}", field="experiment_name")
    return found


def search_experiments(session: Session, who: Tracker, limit: int = 1000) -> list[Experiment]:
    query = select(Experiment).where(Experiment.project_pk == who.project.pk)
    return list(session.scalars(query.order_by(Experiment.id).limit(max(1, min(limit, 50_000)))))


def _int_id(value: str | int, field: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise NotFound(f"no such {field.removesuffix('_id')} {value!r}", field=field) from None
    if not 0 < number < 2**31:
        raise NotFound(f"no such {field.removesuffix('_id')} {value!r}", field=field)
    return number


# --- runs --------------------------------------------------------------------------------


def create_run(
    session: Session,
    who: Tracker,
    experiment_id: str,
    *,
    name: str | None,
    start_ms: int | None,
    tags: dict[str, str],
    now: dt.datetime,
) -> Run:
    experiment = get_experiment(session, who, experiment_id or "0", now)
    run_id = uuid.uuid4().hex
    run = Run(
        id=run_id,
        experiment_id=experiment.id,
        project_pk=who.project.pk,
        user_id=who.user.id,
        job_id=who.job_id,
        name=_check_name(name, "run_name") if name else f"run-{run_id[:8]}",
        status="RUNNING",
        start_ms=start_ms or ms(now),
    )
    session.add(run)
    session.flush()
    for key, value in tags.items():
        set_tag(session, run, key, value)
    return run


def get_run(session: Session, who: Tracker, run_id: str) -> Run:
    found = session.get(Run, run_id) if run_id and len(run_id) <= 32 else None
    if found is None or found.project_pk != who.project.pk:
        raise NotFound(f"no run {run_id}", field="run_id")
    return found


def update_run(
    session: Session, run: Run, status: str | None, end_ms: int | None, name: str | None
) -> Run:
    if status is not None:
        if status not in RUN_STATUSES:
            raise InvalidInput(f"status is one of {', '.join(RUN_STATUSES)}", "status")
        run.status = status
    if end_ms is not None:
        run.end_ms = end_ms
    if name:
        run.name = _check_name(name, "run_name")
    return run


def search_runs(
    session: Session, who: Tracker, experiment_ids: list[str], now: dt.datetime, limit: int = 1000
) -> list[Run]:
    ids = [get_experiment(session, who, e, now).id for e in experiment_ids]
    query = select(Run).where(Run.project_pk == who.project.pk)
    if ids:
        query = query.where(Run.experiment_id.in_(ids))
    query = query.order_by(Run.start_ms.desc(), Run.id)
    return list(session.scalars(query.limit(max(1, min(limit, 50_000)))))


def _key(key: str | None) -> str:
    return _check_name(key, "key", MAX_KEY)


def log_param(session: Session, run: Run, key: str, value: str) -> None:
    key = _key(key)
    found = session.get(RunParam, (run.id, key))
    if found is None:
        session.add(RunParam(run_id=run.id, key=key, value=str(value)[:MAX_VALUE]))
    elif found.value != str(value)[:MAX_VALUE]:  # MLflow: a param is logged once
        raise InvalidInput(f"param {key!r} was logged with another value", "value")


def log_metric(
    session: Session, run: Run, key: str, value: float, timestamp_ms: int, step: int = 0
) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("a metric value is a number", "value") from None
    session.add(
        RunMetric(run_id=run.id, key=_key(key), value=number, timestamp_ms=timestamp_ms, step=step)
    )


def set_tag(session: Session, run: Run, key: str, value: str) -> None:
    key = _key(key)
    found = session.get(RunTag, (run.id, key))
    if found is None:
        session.add(RunTag(run_id=run.id, key=key, value=str(value)[:MAX_VALUE]))
    else:
        found.value = str(value)[:MAX_VALUE]
    if key == "mlflow.runName" and value:
        run.name = _check_name(value, "run_name")
    session.flush()


def params(session: Session, run_id: str) -> dict[str, str]:
    rows = session.scalars(select(RunParam).where(RunParam.run_id == run_id))
    return {r.key: r.value for r in rows}


def tags(session: Session, run_id: str) -> dict[str, str]:
    rows = session.scalars(select(RunTag).where(RunTag.run_id == run_id))
    return {r.key: r.value for r in rows}


def latest_metrics(session: Session, run_id: str) -> dict[str, RunMetric]:
    """Each metric's latest value: the highest step, then the latest timestamp."""
    rows = session.scalars(
        select(RunMetric)
        .where(RunMetric.run_id == run_id)
        .order_by(RunMetric.step, RunMetric.timestamp_ms, RunMetric.id)
    )
    return {r.key: r for r in rows}


def metric_history(session: Session, run: Run, key: str) -> list[RunMetric]:
    query = select(RunMetric).where(RunMetric.run_id == run.id, RunMetric.key == key)
    return list(session.scalars(query.order_by(RunMetric.step, RunMetric.timestamp_ms)))


# --- artifacts ---------------------------------------------------------------------------


def artifact_uri(run: Run) -> str:
    return f"mlflow-artifacts:/{run.experiment_id}/{run.id}/artifacts"


def artifact_root(files: Path, project: Project) -> Path:
    return files / "tracking" / str(project.pk)


def artifact_path(session: Session, who: Tracker, files: Path, path: str) -> Path:
    """Where an artifact path (`<experiment>/<run>/artifacts/...`, as the client names it)
    is on disk: only under a run of this project, never outside it."""
    return project_artifact_path(session, who.project, files, path)


def project_artifact_path(session: Session, project: Project, files: Path, path: str) -> Path:
    parts = [p for p in path.strip("/").split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts) or len(parts) < 2:
        raise NotFound(f"no artifact {path}", field="path")
    run = session.get(Run, parts[1]) if len(parts[1]) <= 32 else None
    if run is None or run.project_pk != project.pk or str(run.experiment_id) != parts[0]:
        raise NotFound(f"no artifact {path}", field="path")
    return artifact_root(files, project).joinpath(*parts)


def write_artifact(target: Path, chunks: bytes) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    partial.write_bytes(chunks)
    partial.replace(target)
    return len(chunks)


def list_artifacts(target: Path, root: Path) -> list[tuple[str, bool, int]]:
    """(path relative to `root`, is a directory, size) of what is in `target`."""
    if not target.is_dir():
        return []
    out = []
    for child in sorted(target.iterdir()):
        if child.name.startswith(".") and child.name.endswith(".part"):
            continue
        is_dir = child.is_dir()
        size = 0 if is_dir else child.stat().st_size
        out.append((str(child.relative_to(root)), is_dir, size))
    return out


def delete_artifacts(target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
