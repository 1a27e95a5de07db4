"""The model registry: registered models, their versions and aliases (MLflow's, not its
deprecated stages), per project; and each version's lineage, read from the job that made it.

`register_version` is the one way a version is made: by the MLflow API (a run's model),
and by other services (a job's checkpoint). Only the project's members see a model; any
other user gets NotFound, as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import Conflict, InvalidInput, NotFound
from fabbrica.core.registry import (
    DatasetRead,
    Lineage,
    ModelRef,
    check_alias,
    check_model_name,
    compute_estimate,
)
from fabbrica.services import tracking
from fabbrica.services.access.visibility import member_project_pks
from fabbrica.services.datasets import member_project
from fabbrica.store.models import (
    Dataset,
    DatasetVersion,
    Job,
    JobDataset,
    ModelAlias,
    ModelVersion,
    Project,
    RegisteredModel,
    Run,
    User,
)

MAX_SOURCE = 1024


def create_model(
    session: Session, project: Project, name: str, now: dt.datetime, description: str = ""
) -> RegisteredModel:
    name = check_model_name(name)
    if _model_named(session, project, name) is not None:
        raise Conflict(f"a registered model named {name!r} exists", field="name")
    model = RegisteredModel(
        project_pk=project.pk,
        name=name,
        description=(description or "")[:10_000],
        created_ms=tracking.ms(now),
        updated_ms=tracking.ms(now),
    )
    session.add(model)
    session.flush()
    return model


def _model_named(session: Session, project: Project, name: str) -> RegisteredModel | None:
    return session.scalar(
        select(RegisteredModel).where(
            RegisteredModel.project_pk == project.pk, RegisteredModel.name == name
        )
    )


def get_model(session: Session, project: Project, name: str) -> RegisteredModel:
    found = _model_named(session, project, name)
    if found is None:
        raise NotFound(f"no registered model {name!r}", field="name")
    return found


def search_models(
    session: Session, project: Project, pattern: str | None = None, limit: int = 1000
) -> list[RegisteredModel]:
    """The project's models whose name is LIKE `pattern` (`\\` escapes; None: all)."""
    query = select(RegisteredModel).where(RegisteredModel.project_pk == project.pk)
    if pattern is not None:
        query = query.where(RegisteredModel.name.like(pattern, escape="\\"))
    query = query.order_by(RegisteredModel.name).limit(max(1, min(limit, 50_000)))
    return list(session.scalars(query))


def register_version(
    session: Session,
    project: Project,
    user: User,
    name: str,
    *,
    source: str,
    now: dt.datetime,
    run_id: str | None = None,
    job_id: int | None = None,
    description: str = "",
) -> ModelVersion:
    """A new version of the project's model `name` (the model is made on first use).

    `source`: where its files are (`mlflow-artifacts:/...` of a run, or another URI);
    `run_id`: the MLflow run that made it, whose job (if a job made the run) becomes the
    version's `job_id`; `job_id`: the job, when there is no run (it must be the project's).
    The job's workdir hash is recorded now; the rest of its lineage is read from the job.
    """
    model = _model_named(session, project, check_model_name(name))
    if model is None:
        model = create_model(session, project, name, now)
    if len(source or "") > MAX_SOURCE:
        raise InvalidInput(f"source is at most {MAX_SOURCE} characters", "source")
    run = None
    if run_id:
        run = session.get(Run, run_id) if len(run_id) <= 32 else None
        if run is None or run.project_pk != project.pk:
            raise NotFound(f"no run {run_id}", field="run_id")
        job_id = job_id if job_id is not None else run.job_id
    job = session.get(Job, job_id) if job_id is not None else None
    if job_id is not None and (job is None or job.project_pk != project.pk):
        raise NotFound(f"no job {job_id}", field="job_id")
    last = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    version = ModelVersion(
        model_id=model.id,
        version=(last or 0) + 1,
        source=source or "",
        run_id=run.id if run is not None else None,
        job_id=job.id if job is not None else None,
        workdir_sha256=_file_sha256(job.workdir_archive) if job is not None else None,
        user_id=user.id,
        description=(description or "")[:10_000],
        created_ms=tracking.ms(now),
    )
    model.updated_ms = tracking.ms(now)
    session.add(version)
    session.flush()
    return version


def _file_sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def get_version(session: Session, project: Project, name: str, version: int) -> ModelVersion:
    model = get_model(session, project, name)
    found = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    )
    if found is None:
        raise NotFound(f"no version {version} of model {name!r}", field="version")
    return found


def versions(
    session: Session,
    project: Project,
    name: str | None = None,
    limit: int = 1000,
    pattern: str | None = None,
) -> list[ModelVersion]:
    """The project's versions (of model `name`, or of models LIKE `pattern`), by name,
    newest first."""
    query = (
        select(ModelVersion)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(RegisteredModel.project_pk == project.pk)
    )
    if name is not None:
        query = query.where(RegisteredModel.name == name)
    if pattern is not None:
        query = query.where(RegisteredModel.name.like(pattern, escape="\\"))
    query = query.order_by(RegisteredModel.name, ModelVersion.version.desc())
    return list(session.scalars(query.limit(max(1, min(limit, 50_000)))))


def project_of(session: Session, model: RegisteredModel) -> Project:
    project = session.get(Project, model.project_pk)
    assert project is not None
    return project


def model_of(session: Session, version: ModelVersion) -> RegisteredModel:
    model = session.get(RegisteredModel, version.model_id)
    assert model is not None  # a version's model is deleted with it
    return model


# --- aliases -----------------------------------------------------------------------------


def set_alias(session: Session, project: Project, name: str, alias: str, version: int) -> None:
    alias = check_alias(alias)
    found = get_version(session, project, name, version)
    row = session.get(ModelAlias, (found.model_id, alias))
    if row is None:
        session.add(ModelAlias(model_id=found.model_id, alias=alias, version=version))
    else:
        row.version = version
    session.flush()


def delete_alias(session: Session, project: Project, name: str, alias: str) -> None:
    model = get_model(session, project, name)
    row = session.get(ModelAlias, (model.id, alias))
    if row is None:
        raise NotFound(f"no alias {alias!r} of model {name!r}", field="alias")
    session.delete(row)


def by_alias(session: Session, project: Project, name: str, alias: str) -> ModelVersion:
    model = get_model(session, project, name)
    row = session.get(ModelAlias, (model.id, alias))
    if row is None:
        raise NotFound(f"no alias {alias!r} of model {name!r}", field="alias")
    return get_version(session, project, name, row.version)


def aliases(session: Session, model_id: int) -> dict[str, int]:
    rows = session.scalars(
        select(ModelAlias).where(ModelAlias.model_id == model_id).order_by(ModelAlias.alias)
    )
    return {r.alias: r.version for r in rows}


# --- Fabbrica's view: across the user's projects -----------------------------------------


def list_versions(
    session: Session, actor: User, project_id: str | None = None
) -> list[tuple[RegisteredModel, ModelVersion]]:
    """Every version of every model of the actor's projects (or of one), newest first."""
    query = (
        select(RegisteredModel, ModelVersion)
        .join(ModelVersion, ModelVersion.model_id == RegisteredModel.id)
        .where(RegisteredModel.project_pk.in_(member_project_pks(actor)))
    )
    if project_id is not None:
        project = member_project(session, actor, project_id, field="project")
        query = query.where(RegisteredModel.project_pk == project.pk)
    query = query.order_by(RegisteredModel.name, ModelVersion.version.desc())
    return [(m, v) for m, v in session.execute(query.limit(10_000)).all()]


def find_version(
    session: Session, actor: User, ref: ModelRef, project_id: str | None = None
) -> tuple[RegisteredModel, ModelVersion]:
    """The version `ref` names among the actor's projects' models (one project's, when the
    name is in several: then `project_id` is needed)."""
    query = select(RegisteredModel).where(
        RegisteredModel.name == ref.name,
        RegisteredModel.project_pk.in_(member_project_pks(actor)),
    )
    if project_id is not None:
        project = member_project(session, actor, project_id, field="project")
        query = query.where(RegisteredModel.project_pk == project.pk)
    found = list(session.scalars(query))
    if not found:
        raise NotFound(f"no model {ref.name!r}", field="model")
    if len(found) > 1:
        raise InvalidInput(f"several projects have a model {ref.name!r}: name one", "project")
    model = found[0]
    project = project_of(session, model)
    if ref.alias is not None:
        return model, by_alias(session, project, model.name, ref.alias)
    if ref.version is not None:
        return model, get_version(session, project, model.name, ref.version)
    latest = versions(session, project, model.name, limit=1)
    if not latest:
        raise NotFound(f"model {ref.name!r} has no version", field="model")
    return model, latest[0]


def lineage(
    session: Session, catalog: Catalog, model: RegisteredModel, version: ModelVersion
) -> Lineage:
    """What made the version: its job (spec, workdir, factory, GPUs, GPU-hours charged),
    the data set versions the job read, the run's metrics and params."""
    project = session.get(Project, model.project_pk)
    job = session.get(Job, version.job_id) if version.job_id is not None else None
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if version.run_id is not None:
        metrics = {k: m.value for k, m in tracking.latest_metrics(session, version.run_id).items()}
        params = tracking.params(session, version.run_id)
    created = dt.datetime.fromtimestamp(version.created_ms / 1000, dt.UTC)
    base = Lineage(
        name=model.name,
        version=version.version,
        project=(project.id if project is not None else None) or "",
        source=version.source,
        run_id=version.run_id,
        created_at=created.isoformat(timespec="seconds"),
        workdir_sha256=version.workdir_sha256,
        metrics=metrics,
        params=params,
        aliases=tuple(a for a, v in aliases(session, model.id).items() if v == version.version),
        description=version.description or model.description,
    )
    if job is None:
        return base
    peak = catalog.peak_flops(job.gpu_model)
    return replace(
        base,
        job=job.id,
        job_name=job.name,
        job_state=job.state,
        spec=json.loads(job.spec),
        factory=job.factory_id,
        gpu_model=job.gpu_model,
        gpus=job.gpus,
        gpu_hours=job.gpu_hours,
        peak_flops=peak,
        compute_flop=compute_estimate(job.gpu_hours, peak),
        datasets=job_datasets(session, job.id),
    )


def job_datasets(session: Session, job_id: int) -> tuple[DatasetRead, ...]:
    rows = session.execute(
        select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .join(JobDataset, JobDataset.version_id == DatasetVersion.id)
        .where(JobDataset.job_id == job_id)
        .order_by(Dataset.name)
    ).all()
    return tuple(
        DatasetRead(
            name=d.name,
            version=v.version,
            files=v.file_count,
            size_bytes=v.size_bytes,
            license=d.license,
            residency=d.residency,
            data_class=d.data_class,
            description=d.description,
        )
        for d, v in rows
    )


def source_path(
    session: Session, files: Path, model: RegisteredModel, version: ModelVersion
) -> Path:
    """Where the version's files are on this server (a file or a folder): its source is
    a run's artifacts (`mlflow-artifacts:/...` or `runs:/RUN/...`); NotFound otherwise."""
    project = session.get(Project, model.project_pk)
    assert project is not None
    source = version.source
    if source.startswith("runs:/"):
        run_id, _, rest = source.removeprefix("runs:/").partition("/")
        run = session.get(Run, run_id) if len(run_id) <= 32 else None
        if run is None or run.project_pk != project.pk:
            raise NotFound(f"version {version.version} has no files here", field="model")
        source = f"{tracking.artifact_uri(run)}/{rest}"
    if not source.startswith("mlflow-artifacts:"):
        raise NotFound(
            f"version {version.version}'s files are not kept by Fabbrica ({source})",
            field="model",
        )
    path = source.removeprefix("mlflow-artifacts:").lstrip("/")
    target = tracking.project_artifact_path(session, project, files, path)
    if not target.exists():
        raise NotFound(f"version {version.version}'s files are missing", field="model")
    return target
