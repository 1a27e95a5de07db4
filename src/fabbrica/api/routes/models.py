"""The model registry as Fabbrica shows it: the versions of your projects' models, one
version's lineage, its model card (Markdown) and its files. Only the project's people see
a model (others: 404). MLflow's own API for the same registry is at /mlflow/<project>."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, PlainTextResponse, Response

from fabbrica.api.deps import CatalogDep, ContextDep, CurrentUser, SessionDep
from fabbrica.api.schemas_models import (
    ComputePublic,
    DatasetReadPublic,
    LineagePublic,
    ModelVersionPublic,
)
from fabbrica.core.errors import NotFound
from fabbrica.core.registry import Lineage, compute_text, model_card, parse_model_ref
from fabbrica.services import models
from fabbrica.store.models import ModelVersion, RegisteredModel

router = APIRouter(tags=["models"])

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="a model's name")]
VersionText = Annotated[
    str, Path(min_length=1, max_length=64, description="a version number, or an alias")
]
ProjectQuery = Annotated[
    str | None, Query(max_length=40, description="the project (when several have the name)")
]


def version_public(
    project: str, model: RegisteredModel, version: ModelVersion, aliases: list[str]
) -> ModelVersionPublic:
    return ModelVersionPublic(
        name=model.name,
        version=version.version,
        project=project,
        job=version.job_id,
        run_id=version.run_id,
        source=version.source,
        aliases=aliases,
        created_at=_iso(version.created_ms),
    )


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def lineage_public(lineage: Lineage) -> LineagePublic:
    return LineagePublic(
        name=lineage.name,
        version=lineage.version,
        project=lineage.project,
        job=lineage.job,
        run_id=lineage.run_id,
        source=lineage.source,
        aliases=list(lineage.aliases),
        created_at=lineage.created_at,
        job_name=lineage.job_name,
        job_state=lineage.job_state,
        spec=lineage.spec,
        workdir_sha256=lineage.workdir_sha256,
        factory=lineage.factory,
        gpu_model=lineage.gpu_model,
        gpus=lineage.gpus,
        gpu_hours=lineage.gpu_hours,
        compute=ComputePublic(
            gpu_hours=lineage.gpu_hours,
            peak_flops=lineage.peak_flops,
            flop=lineage.compute_flop,
            text=compute_text(lineage),
        ),
        datasets=[
            DatasetReadPublic(
                name=d.name,
                version=d.version,
                files=d.files,
                size_bytes=d.size_bytes,
                license=d.license,
                residency=d.residency,
                data_class=d.data_class,
            )
            for d in lineage.datasets
        ],
        metrics=lineage.metrics,
        params=lineage.params,
        description=lineage.description,
    )


@router.get("/models", response_model=list[ModelVersionPublic])
def list_models(
    session: SessionDep, actor: CurrentUser, project: ProjectQuery = None
) -> list[ModelVersionPublic]:
    """Every version of your projects' registered models (of one project with
    `?project=`), by name, newest version first."""
    out = []
    for model, version in models.list_versions(session, actor, project):
        named = [a for a, v in models.aliases(session, model.id).items() if v == version.version]
        owner = models.project_of(session, model)
        out.append(version_public(owner.id or "", model, version, named))
    return out


def _find(
    session: SessionDep, actor: CurrentUser, name: str, version: str, project: str | None
) -> tuple[RegisteredModel, ModelVersion]:
    ref = parse_model_ref(f"{name}@{version}")
    return models.find_version(session, actor, ref, project)


@router.get("/models/{name}/versions/{version}", response_model=LineagePublic)
def show_model(
    name: ModelName,
    version: VersionText,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
    project: ProjectQuery = None,
) -> LineagePublic:
    """One version (a number or an alias) and its lineage: the job, its spec and workdir
    hash, the data set versions it read, factory, GPU model, GPU-hours, a training compute
    estimate, the run's metrics."""
    model, found = _find(session, actor, name, version, project)
    return lineage_public(models.lineage(session, catalog, model, found))


@router.get("/models/{name}/versions/{version}/card", response_class=PlainTextResponse)
def model_card_text(
    name: ModelName,
    version: VersionText,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
    project: ProjectQuery = None,
) -> PlainTextResponse:
    """The version's model card, in Markdown."""
    model, found = _find(session, actor, name, version, project)
    text = model_card(models.lineage(session, catalog, model, found))
    return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")


@router.get("/models/{name}/versions/{version}/files")
def download_model(
    name: ModelName,
    version: VersionText,
    session: SessionDep,
    actor: CurrentUser,
    ctx: ContextDep,
    project: ProjectQuery = None,
) -> Response:
    """The version's files: a file as it is, a folder as a gzipped tar."""
    if ctx.files is None:
        raise NotFound("this server keeps no model files", field="model")
    model, found = _find(session, actor, name, version, project)
    target = models.source_path(session, ctx.files, model, found)
    if target.is_file():
        return FileResponse(target, media_type="application/octet-stream", filename=target.name)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(target, arcname=".", filter=_no_partial)
    return Response(buffer.getvalue(), media_type="application/gzip")


def _no_partial(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.endswith(".part") else info
