"""Data sets: resumable uploads (a session, byte ranges, the offset, commit), listing,
files, the Croissant document and deletion. Only the project's people see a data set."""

from __future__ import annotations

import re
from pathlib import Path as PathType
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy.orm import Session

from fabbrica.api.deps import ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import MAX_ID
from fabbrica.api.schemas_datasets import (
    DatasetDeleted,
    DatasetPublic,
    FilePublic,
    UploadCreate,
    UploadPublic,
    VersionPublic,
)
from fabbrica.core.errors import InvalidInput
from fabbrica.services import dataset_store, datasets
from fabbrica.store.models import Dataset, DatasetUpload, Project

router = APIRouter(tags=["datasets"])

UPLOADS_PATH = "/dataset-uploads"
_RANGE = re.compile(r"^bytes (\d{1,15})-(\d{1,15})/(\d{1,15})$")
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an upload id")]
DatasetId = Annotated[int, Path(ge=1, le=MAX_ID, description="a data set id")]
VersionQuery = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="a version (default: the latest)")
]


def upload_public(upload: DatasetUpload, project: str) -> UploadPublic:
    return UploadPublic(
        id=upload.id,
        project=project,
        name=upload.name,
        size=upload.size_bytes,
        received=upload.received,
    )


def dataset_public(session: Session, dataset: Dataset, version: int | None = None) -> DatasetPublic:
    found = datasets.versions(session, dataset)
    files = None
    shown = found[-1].version if found else None
    if version is not None:
        one = datasets.get_version(session, dataset, version)
        shown = one.version
        files = [FilePublic(path=f.path, sha256=f.sha256, size=f.size) for f in
                 datasets.files_of(session, one)]  # fmt: skip
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        project=dataset.project.id or "",
        residency=dataset.residency,
        data_class=dataset.data_class,
        license=dataset.license,
        description=dataset.description,
        created_at=dataset.created_at,
        version=shown,
        versions=[
            VersionPublic(
                version=v.version, size=v.size_bytes, files=v.file_count, created_at=v.created_at
            )
            for v in found
        ],
        files=files,
    )


def _files(ctx: ContextDep) -> PathType:
    if ctx.files is None:
        raise InvalidInput("this server keeps no files: it takes no data sets", "project")
    return ctx.files


@router.post("/dataset-uploads", response_model=UploadPublic, status_code=status.HTTP_201_CREATED)
def start_upload(
    body: UploadCreate, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> UploadPublic:
    """Start the upload of a new version (the data set is created by its first one), or
    find the unfinished upload of the same bytes again: `received` says where to go on."""
    _files(ctx)
    request = datasets.UploadRequest(
        project_id=body.project,
        name=body.name,
        size=body.size,
        sha256=body.sha256,
        residency=body.residency,
        data_class=body.data_class,
        license=body.license,
        description=body.description,
    )
    upload = datasets.start_upload(
        session, actor, request, quota=ctx.dataset_quota_bytes, now=ctx.clock()
    )
    shown = upload_public(upload, body.project)
    session.commit()
    return shown


@router.get("/dataset-uploads/{upload_id}", response_model=UploadPublic)
def get_upload(upload_id: UploadId, session: SessionDep, actor: CurrentUser) -> UploadPublic:
    """An upload under way (yours only): `received` is the offset to send from."""
    upload = datasets.get_upload(session, actor, upload_id)
    return upload_public(upload, _project_id(session, upload))


@router.head("/dataset-uploads/{upload_id}")
def upload_offset(upload_id: UploadId, session: SessionDep, actor: CurrentUser) -> Response:
    """The offset received so far, in `Upload-Offset` (and the size in `Upload-Length`)."""
    upload = datasets.get_upload(session, actor, upload_id)
    headers = {"Upload-Offset": str(upload.received), "Upload-Length": str(upload.size_bytes)}
    return Response(status_code=200, headers=headers)


@router.put("/dataset-uploads/{upload_id}", response_model=UploadPublic)
async def upload_range(
    upload_id: UploadId, request: Request, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> UploadPublic:
    """Bytes of the upload (`application/octet-stream`), placed by `Content-Range: bytes
    START-END/SIZE`; START must be the offset received so far (409 naming `offset`
    otherwise, with nothing written)."""
    files = _files(ctx)
    start, end, total = _content_range(request.headers.get("content-range"))
    data = await request.body()
    if end - start + 1 != len(data):
        raise InvalidInput(
            f"Content-Range names {end - start + 1} bytes; the body has {len(data)}",
            "Content-Range",
        )

    def work() -> UploadPublic:
        upload = datasets.receive(session, actor, upload_id, start, data, files=files, total=total)
        shown = upload_public(upload, _project_id(session, upload))
        session.commit()
        return shown

    return await run_in_threadpool(work)


def _content_range(value: str | None) -> tuple[int, int, int]:
    match = _RANGE.match(value or "")
    if match is None:
        raise InvalidInput("send Content-Range: bytes START-END/SIZE", "Content-Range")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise InvalidInput("the range ends before it starts", "Content-Range")
    return start, end, int(match.group(3))


def _project_id(session: Session, upload: DatasetUpload) -> str:
    project = session.get(Project, upload.project_pk)
    return project.id or "" if project is not None else ""


@router.post(
    "/dataset-uploads/{upload_id}/commit",
    response_model=DatasetPublic,
    status_code=status.HTTP_201_CREATED,
)
def commit_upload(
    upload_id: UploadId, ctx: ContextDep, session: SessionDep, actor: CurrentUser
) -> DatasetPublic:
    """The complete upload becomes the data set's next version (its sha256 checked, each
    file put in the content store under its own sha256)."""
    files = _files(ctx)
    try:
        version = datasets.commit_upload(
            session, actor, upload_id, files=files, quota=ctx.dataset_quota_bytes, now=ctx.clock()
        )
    except datasets.BadUpload:
        datasets.restart_upload(session, actor, upload_id, files=files)
        session.commit()
        raise
    shown = dataset_public(session, version.dataset, version.version)
    session.commit()
    dataset_store.discard_part(files, upload_id)
    return shown


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(
    session: SessionDep,
    actor: CurrentUser,
    project_id: str | None = Query(default=None, max_length=40),
) -> list[DatasetPublic]:
    """The data sets of your projects."""
    found = datasets.list_datasets(session, actor, project_id)
    return [dataset_public(session, d) for d in found]


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
def get_dataset(
    dataset_id: DatasetId, session: SessionDep, actor: CurrentUser, version: VersionQuery = None
) -> DatasetPublic:
    """One data set with its versions, and the files of one version (the latest)."""
    dataset = datasets.get_dataset(session, actor, dataset_id)
    shown = datasets.get_version(session, dataset, version)
    return dataset_public(session, dataset, shown.version)


@router.get("/datasets/{dataset_id}/croissant.json")
def croissant(
    dataset_id: DatasetId,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    version: VersionQuery = None,
) -> JSONResponse:
    """The Croissant 1.1 JSON-LD document of a version (the latest by default)."""
    base = ctx.public_url or str(request.base_url)
    doc = datasets.croissant_of(session, actor, dataset_id, version, base_url=base)
    return JSONResponse(doc, media_type="application/ld+json")


@router.get("/datasets/{dataset_id}/versions/{version}/file")
def download_file(
    dataset_id: DatasetId,
    path: Annotated[str, Query(min_length=1, max_length=1024, description="the file's path")],
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    version: int = Path(ge=1, le=MAX_ID),
) -> FileResponse:
    """One file of a version, as stored (its sha256 in `X-Sha256`)."""
    files = _files(ctx)
    dataset = datasets.get_dataset(session, actor, dataset_id)
    entry = datasets.file_of(session, datasets.get_version(session, dataset, version), path)
    return FileResponse(
        dataset_store.object_path(files, entry.sha256),
        media_type="application/octet-stream",
        headers={"X-Sha256": entry.sha256},
    )


@router.delete("/datasets/{dataset_id}", response_model=DatasetDeleted)
def delete_dataset(
    dataset_id: DatasetId,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    version: VersionQuery = None,
) -> DatasetDeleted:
    """Delete a version (`?version=N`) or the whole data set; refused (409 naming
    `version`) while a queued or running job reads it."""
    names, unused = datasets.delete_versions(session, actor, dataset_id, version)
    session.commit()
    if ctx.files is not None:
        dataset_store.remove_objects(ctx.files, unused)
    return DatasetDeleted(deleted=names)
