"""A job's submission with its workdir archive, as the API and the portal both take it:
the archive is checked before anything is stored, written only once the job is accepted,
and gone again if the transaction cannot commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.archives import ArchiveLimits
from fabbrica.core.errors import InvalidInput
from fabbrica.core.jobspec import JobSpec
from fabbrica.services import job_files, jobs
from fabbrica.services.single_user import SingleUser
from fabbrica.store.models import Job, User

T = TypeVar("T")


def submit_and_commit(
    session: Session,
    actor: User,
    catalog: Catalog,
    spec: JobSpec,
    *,
    project_id: str | None,
    archive: bytes | None,
    files: Path | None,
    limits: ArchiveLimits,
    connected: set[str],
    single_user: SingleUser,
    now: dt.datetime,
    present: Callable[[Job], T],
    recheck: Callable[[], set[str]] | None = None,
) -> T:
    """Queue the job and commit; returns `present(job)`, made before the commit."""
    path = None
    if archive is not None:
        if files is None:
            raise InvalidInput("this server keeps no files; submit without a workdir", "workdir")
        job_files.check_upload(archive, limits)
        path = job_files.upload_path(files)
    job = jobs.submit(
        session,
        actor,
        catalog,
        spec,
        project_id=project_id,
        connected=connected,
        workdir_archive=str(path) if path is not None else None,
        now=now,
        single_user=single_user,
        recheck=recheck,
    )
    try:  # stored only once the job is accepted; gone again if it cannot be kept
        if path is not None and archive is not None:
            job_files.store_upload(path, archive)
        shown = present(job)
        session.commit()
    except BaseException:
        job_files.discard_upload(path)
        raise
    return shown
