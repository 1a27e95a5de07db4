"""Data sets at site agents: what a launch tells the agent to fetch, and the bytes an
agent may fetch: only files of a data set version a job placed on its factory reads, and
only when the data set's residency allows the factory's country (a factory outside it never
receives the bytes, whatever placed the job there)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.datasets import residency_countries
from fabbrica.core.errors import Forbidden, NotFound
from fabbrica.core.executor import DataMount
from fabbrica.services.datasets import job_mounts
from fabbrica.store.models import Dataset, DatasetFile, DatasetVersion, Job, JobDataset

API = "/api/v1"


def object_url(job_id: int, sha256: str) -> str:
    return f"{API}/agent/jobs/{job_id}/objects/{sha256}"


def agent_mounts(session: Session, job_id: int) -> tuple[DataMount, ...]:
    """The data sets of a job as an agent fetches them: each file's API path (ending in
    its sha256, which the agent checks)."""
    rows = session.execute(
        select(JobDataset.name, Dataset.name, DatasetVersion.version)
        .join(DatasetVersion, DatasetVersion.id == JobDataset.version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(JobDataset.job_id == job_id)
    )
    versions = {mount: f"{name}@{version}" for mount, name, version in rows}
    return tuple(
        DataMount(
            name,
            tuple((f.path, object_url(job_id, f.sha256)) for f in entries),
            version=versions.get(name, name),
            size=sum(f.size for f in entries),
        )
        for name, entries in job_mounts(session, job_id)
    )


def agent_object(session: Session, catalog: Catalog, job: Job, sha256: str) -> str:
    """The sha256 of a file the agent may fetch for `job` (a job of its factory, from
    services.agents.agent_job); NotFound unless the job reads it, Forbidden when the
    residency excludes the factory."""
    rows = session.execute(
        select(Dataset.name, Dataset.residency)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .join(JobDataset, JobDataset.version_id == DatasetVersion.id)
        .join(DatasetFile, DatasetFile.version_id == DatasetVersion.id)
        .where(JobDataset.job_id == job.id, DatasetFile.sha256 == sha256)
    ).all()
    if not rows:
        raise NotFound(f"job {job.id} reads no such file", field="sha256")
    factory = catalog.factory(job.factory_id or "")
    country = factory.country if factory is not None else None
    for name, residency in rows:
        allowed = residency_countries(residency)
        if allowed is not None and country not in allowed:
            raise Forbidden(
                f"the residency of the data set {name} ({residency}) does not allow "
                f"{job.factory_id}",
                field="sha256",
            )
    return sha256
