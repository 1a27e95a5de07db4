"""Data sets: resumable uploads that become immutable versions, listing, deletion, the
Croissant document, and the versions a job reads.

A data set belongs to a project and only the project's people see it (others get 404,
staff included: data is the tenant's). Its bytes are in the content store
(services.dataset_store); rows here name them by sha256.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.core.datasets import (
    DatasetRef,
    FileEntry,
    VersionFacts,
    check_class,
    check_name,
    croissant,
    parse_residency,
    residency_countries,
)
from fabbrica.core.errors import Conflict, InvalidInput, NotFound, TooLarge
from fabbrica.core.jobs import JobState
from fabbrica.core.text import clean_text
from fabbrica.services import dataset_store
from fabbrica.services.access.visibility import member_project_pks, visible_project
from fabbrica.store.models import (
    Dataset,
    DatasetFile,
    DatasetUpload,
    DatasetVersion,
    Job,
    JobDataset,
    Project,
    User,
)

IN_USE = (JobState.QUEUED.value, JobState.DISPATCHED.value, JobState.RUNNING.value)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class UploadRequest:
    """What `dataset add` asks for: the data set (new, or a new version of it) and the
    upload's size and sha256 (of the tar sent)."""

    project_id: str
    name: str
    size: int
    sha256: str
    residency: str | Sequence[str] | None = None
    data_class: str | None = None
    license: str | None = None
    description: str | None = None


# --- uploads ---------------------------------------------------------------------------


def start_upload(
    session: Session, actor: User, request: UploadRequest, *, quota: int, now: dt.datetime
) -> DatasetUpload:
    """A new upload, or the unfinished one of the same bytes (same user, project, name,
    size and sha256): the client then resumes from its `received`."""
    project = member_project(session, actor, request.project_id, field="project")
    name = check_name(request.name)
    if request.size < 0:
        raise InvalidInput("the size is a number of bytes", "size")
    sha = request.sha256.lower()
    if not _SHA256.match(sha):
        raise InvalidInput("sha256 is 64 hexadecimal digits", "sha256")
    existing = session.scalar(
        select(Dataset).where(Dataset.project_pk == project.pk, Dataset.name == name)
    )
    residency, data_class, license_, description = _metadata(request, existing)
    pending = session.scalar(
        select(DatasetUpload).where(
            DatasetUpload.user_id == actor.id,
            DatasetUpload.project_pk == project.pk,
            DatasetUpload.name == name,
            DatasetUpload.sha256 == sha,
            DatasetUpload.size_bytes == request.size,
        )
    )
    if pending is not None:
        return pending
    _check_quota(session, project, request.size, quota)
    upload = DatasetUpload(
        id=uuid.uuid4().hex,
        user_id=actor.id,
        project_pk=project.pk,
        name=name,
        residency=residency,
        data_class=data_class,
        license=license_,
        description=description,
        size_bytes=request.size,
        sha256=sha,
        received=0,
        created_at=now,
    )
    session.add(upload)
    session.flush()
    return upload


def _metadata(
    request: UploadRequest, existing: Dataset | None
) -> tuple[str | None, str, str | None, str]:
    residency = parse_residency(request.residency)
    license_ = _text(request.license, "license", 200)
    description = _text(request.description, "description", 10_000)
    if existing is None:
        data_class = check_class(request.data_class or "internal", residency)
        return residency, data_class.value, license_, description or ""
    # a new version keeps the data set's terms; saying other terms is a mistake
    given = {
        "residency": (request.residency is not None, residency, existing.residency),
        "class": (request.data_class is not None, request.data_class, existing.data_class),
        "license": (license_ is not None, license_, existing.license),
    }
    for field, (said, value, kept) in given.items():
        if said and value != kept:
            raise Conflict(
                f"the data set {existing.name} has {field} {kept or 'none'}; a new version "
                "keeps its terms (add it under another name to change them)",
                field=field,
            )
    return existing.residency, existing.data_class, existing.license, existing.description


def _text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    return clean_text(value, field, max_len=limit, min_len=0, multiline=field == "description")


def get_upload(
    session: Session, actor: User, upload_id: str, *, lock: bool = False
) -> DatasetUpload:
    query = select(DatasetUpload).where(
        DatasetUpload.id == upload_id, DatasetUpload.user_id == actor.id
    )
    upload = session.scalar(query.with_for_update() if lock else query)
    if upload is None:
        raise NotFound(f"no upload {upload_id[:40]}", field="upload_id")
    return upload


def receive(
    session: Session,
    actor: User,
    upload_id: str,
    start: int,
    data: bytes,
    *,
    files: Path,
    total: int | None = None,
) -> DatasetUpload:
    """Bytes `start`.. of the upload. Conflict (field `offset`) unless `start` is where
    the server stopped: the client asks for the offset and goes on from there."""
    upload = get_upload(session, actor, upload_id, lock=True)
    if total is not None and total != upload.size_bytes:
        raise InvalidInput(
            f"the upload is {upload.size_bytes} bytes, not {total}", field="Content-Range"
        )
    if start != upload.received:
        raise Conflict(
            f"the server has {upload.received} bytes of this upload: send from there",
            field="offset",
        )
    if start + len(data) > upload.size_bytes:
        raise InvalidInput(
            f"the upload is {upload.size_bytes} bytes; this range ends at {start + len(data)}",
            field="offset",
        )
    dataset_store.write_range(files, upload.id, start, data)
    upload.received = start + len(data)
    return upload


def commit_upload(
    session: Session, actor: User, upload_id: str, *, files: Path, quota: int, now: dt.datetime
) -> DatasetVersion:
    """The complete upload becomes the next version of its data set (created the first
    time); the upload is gone afterwards."""
    upload = get_upload(session, actor, upload_id, lock=True)
    if upload.received != upload.size_bytes:
        raise Conflict(
            f"the server has {upload.received} of {upload.size_bytes} bytes: send the rest",
            field="offset",
        )
    # one commit per project at a time: version numbers and first versions never collide
    project = session.scalars(
        select(Project).where(Project.pk == upload.project_pk).with_for_update()
    ).one()
    if dataset_store.file_sha256(dataset_store.part_path(files, upload.id)) != upload.sha256:
        raise BadUpload(
            "the bytes received do not have the sha256 announced; the upload starts again "
            "from byte 0",
            "sha256",
        )
    entries = dataset_store.ingest(files, upload.id)
    size = sum(e.size for e in entries)
    _check_quota(session, project, size, quota, leaving=upload)
    dataset = session.scalar(
        select(Dataset).where(Dataset.project_pk == project.pk, Dataset.name == upload.name)
    )
    if dataset is None:
        dataset = Dataset(
            project_pk=project.pk,
            name=upload.name,
            residency=upload.residency,
            data_class=upload.data_class,
            license=upload.license,
            description=upload.description,
            created_by=actor.id,
            created_at=now,
        )
        session.add(dataset)
        session.flush()
    last = session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    )
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=(last or 0) + 1,
        size_bytes=size,
        file_count=len(entries),
        created_by=actor.id,
        created_at=now,
    )
    version.dataset = dataset
    session.add(version)
    session.flush()
    session.add_all(
        DatasetFile(version_id=version.id, path=e.path, sha256=e.sha256, size_bytes=e.size)
        for e in entries
    )
    session.delete(upload)
    return version


class BadUpload(InvalidInput):
    """What arrived is not what was announced: the caller restarts the upload."""


def restart_upload(session: Session, actor: User, upload_id: str, *, files: Path) -> None:
    """Forget the bytes received (the next range starts at 0)."""
    upload = get_upload(session, actor, upload_id, lock=True)
    upload.received = 0
    dataset_store.discard_part(files, upload.id)


def _check_quota(
    session: Session, project: Project, size: int, quota: int, leaving: DatasetUpload | None = None
) -> None:
    """TooLarge (field `size`) when the project's versions and pending uploads (but
    `leaving`, which becomes a version) and `size` more would pass `quota` bytes."""
    kept = session.scalar(
        select(func.coalesce(func.sum(DatasetVersion.size_bytes), 0))
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(Dataset.project_pk == project.pk)
    )
    pending_query = select(func.coalesce(func.sum(DatasetUpload.size_bytes), 0)).where(
        DatasetUpload.project_pk == project.pk
    )
    if leaving is not None:
        pending_query = pending_query.where(DatasetUpload.id != leaving.id)
    used = int(kept or 0) + int(session.scalar(pending_query) or 0)
    if used + size > quota:
        raise TooLarge(
            f"project {project.id} keeps {used:,} bytes of data sets (uploads under way "
            f"included); {size:,} more would pass its quota of {quota:,}",
            field="size",
        )


# --- reading ---------------------------------------------------------------------------


def member_project(session: Session, actor: User, project_id: str, field: str) -> Project:
    """A project the actor belongs to (NotFound for any other, as if it did not exist)."""
    project = visible_project(session, actor, project_id, field=field)
    if session.scalar(member_project_pks(actor).where(Project.pk == project.pk)) is None:
        raise NotFound(f"no project {project_id}", field=field)
    return project


def list_datasets(session: Session, actor: User, project_id: str | None = None) -> list[Dataset]:
    query = select(Dataset).where(Dataset.project_pk.in_(member_project_pks(actor)))
    if project_id is not None:
        project = member_project(session, actor, project_id, field="project_id")
        query = query.where(Dataset.project_pk == project.pk)
    return list(session.scalars(query.order_by(Dataset.id)))


def get_dataset(session: Session, actor: User, dataset_id: int) -> Dataset:
    dataset = session.scalar(
        select(Dataset).where(
            Dataset.id == dataset_id, Dataset.project_pk.in_(member_project_pks(actor))
        )
    )
    if dataset is None:
        raise NotFound(f"no data set {dataset_id}", field="dataset_id")
    return dataset


def versions(session: Session, dataset: Dataset) -> list[DatasetVersion]:
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    return list(session.scalars(query.order_by(DatasetVersion.version)))


def get_version(session: Session, dataset: Dataset, version: int | None) -> DatasetVersion:
    """The version (None: the latest)."""
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if version is None:
        query = query.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        query = query.where(DatasetVersion.version == version)
    found = session.scalar(query)
    if found is None:
        what = f"version {version}" if version is not None else "version"
        raise NotFound(f"the data set {dataset.name} has no {what}", field="version")
    return found


def files_of(session: Session, version: DatasetVersion) -> list[FileEntry]:
    query = select(DatasetFile).where(DatasetFile.version_id == version.id)
    return [
        FileEntry(f.path, f.sha256, f.size_bytes)
        for f in session.scalars(query.order_by(DatasetFile.path))
    ]


def file_of(session: Session, version: DatasetVersion, path: str) -> FileEntry:
    row = session.scalar(
        select(DatasetFile).where(DatasetFile.version_id == version.id, DatasetFile.path == path)
    )
    if row is None:
        raise NotFound(f"no file {path[:200]!r} in this version", field="path")
    return FileEntry(row.path, row.sha256, row.size_bytes)


def croissant_of(
    session: Session, actor: User, dataset_id: int, version: int | None, *, base_url: str
) -> dict[str, object]:
    dataset = get_dataset(session, actor, dataset_id)
    found = get_version(session, dataset, version)
    facts = VersionFacts(
        dataset_id=dataset.id,
        name=dataset.name,
        description=dataset.description,
        license=dataset.license,
        version=found.version,
        created=found.created_at.isoformat(),
        residency=dataset.residency,
        data_class=dataset.data_class,
        files=tuple(files_of(session, found)),
        url=f"{base_url.rstrip('/')}/api/v1/datasets/{dataset.id}",
    )
    return croissant(facts)


def sweep_files(session: Session, files: Path) -> list[Path]:
    """Remove the data set files no upload or version names (dataset_store.sweep)."""
    live = set(session.scalars(select(DatasetUpload.id)))
    referenced = set(session.scalars(select(DatasetFile.sha256).distinct()))
    return dataset_store.sweep(files, live, referenced)


# --- deleting --------------------------------------------------------------------------


def delete_versions(
    session: Session, actor: User, dataset_id: int, version: int | None
) -> tuple[list[str], set[str]]:
    """Delete one version (or, with None, the whole data set; deleting its last version
    deletes it too). Conflict (field
    `version`) while a queued or running job reads it. Returns what was deleted
    (`name@N` each) and the sha256 of the objects no version names any more: the caller
    removes them from the content store once the transaction committed."""
    dataset = get_dataset(session, actor, dataset_id)
    doomed = [get_version(session, dataset, version)] if version is not None else []
    if version is None:
        doomed = versions(session, dataset)
    ids = [v.id for v in doomed]
    busy = list(
        session.scalars(
            select(Job.id)
            .join(JobDataset, JobDataset.job_id == Job.id)
            .where(JobDataset.version_id.in_(ids), Job.state.in_(IN_USE))
            .order_by(Job.id)
            .limit(5)
        )
    )
    if busy:
        jobs = ", ".join(str(j) for j in busy)
        raise Conflict(
            f"queued or running jobs read this data set (jobs {jobs}): cancel them or wait",
            field="version",
        )
    shas = set(session.scalars(select(DatasetFile.sha256).where(DatasetFile.version_id.in_(ids))))
    names = [f"{dataset.name}@{v.version}" for v in doomed]
    for doomed_version in doomed:
        session.delete(doomed_version)
    session.flush()
    if version is None or not versions(session, dataset):
        session.delete(dataset)  # a data set lives as long as one of its versions
        session.flush()
    kept = set(session.scalars(select(DatasetFile.sha256).where(DatasetFile.sha256.in_(shas))))
    return names, shas - kept


# --- jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobData:
    """The versions a job reads, and what their residencies allow together."""

    versions: tuple[tuple[str, DatasetVersion], ...]  # (mount name, version)
    countries: frozenset[str] | None  # None: anywhere
    label: str | None  # names the data sets that limit placement, for reasons


def resolve_for_job(session: Session, project: Project, refs: Sequence[DatasetRef]) -> JobData:
    """The versions `refs` name in the job's project (no version: the latest);
    InvalidInput naming `datasets` for one that is not there."""
    found: list[tuple[str, DatasetVersion]] = []
    countries: frozenset[str] | None = None
    limits: list[str] = []
    for ref in refs:
        dataset = session.scalar(
            select(Dataset).where(Dataset.project_pk == project.pk, Dataset.name == ref.name)
        )
        if dataset is None:
            raise InvalidInput(f"project {project.id} has no data set {ref.name}", "datasets")
        try:
            version = get_version(session, dataset, ref.version)
        except NotFound as exc:
            raise InvalidInput(exc.message, "datasets") from exc
        found.append((ref.name, version))
        allowed = residency_countries(dataset.residency)
        if allowed is not None:
            countries = allowed if countries is None else countries & allowed
            limits.append(f"{dataset.name}@{version.version} ({dataset.residency})")
    label = "data residency of " + ", ".join(limits) if limits else None
    return JobData(tuple(found), countries, label)


def link_job(session: Session, job: Job, data: JobData) -> None:
    session.add_all(JobDataset(job_id=job.id, version_id=v.id, name=n) for n, v in data.versions)


def job_mounts(session: Session, job_id: int) -> list[tuple[str, list[FileEntry]]]:
    """What a job reads: (its name under $FABBRICA_DATA, the version's files)."""
    rows = session.execute(
        select(JobDataset.name, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.id == JobDataset.version_id)
        .where(JobDataset.job_id == job_id)
        .order_by(JobDataset.name)
    )
    return [(name, files_of(session, version)) for name, version in rows]


def residency_by_job(session: Session, job_ids: Sequence[int]) -> dict[int, JobData]:
    """The residency limits of the jobs among `job_ids` that read data sets."""
    rows = session.execute(
        select(JobDataset.job_id, JobDataset.name, DatasetVersion, Dataset)
        .join(DatasetVersion, DatasetVersion.id == JobDataset.version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(JobDataset.job_id.in_(job_ids), Dataset.residency.is_not(None))
    )
    limits: dict[int, JobData] = {}
    for job_id, name, version, dataset in rows:
        allowed = residency_countries(dataset.residency) or frozenset()
        before = limits.get(job_id)
        label = f"{dataset.name}@{version.version} ({dataset.residency})"
        if before is None:
            limits[job_id] = JobData(((name, version),), allowed, "data residency of " + label)
        else:
            countries = (before.countries or allowed) & allowed
            limits[job_id] = JobData(
                (*before.versions, (name, version)), countries, f"{before.label}, {label}"
            )
    return limits
