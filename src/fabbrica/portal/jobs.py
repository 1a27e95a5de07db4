"""A member's jobs: the list with states and waiting reasons, submission (a spec with its
files, or one of the examples), a job's page with its log streaming while it runs,
cancel, and the outputs to download."""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from fabbrica.core.errors import FabbricaError, InvalidInput, NotFound
from fabbrica.core.jobs import JobState
from fabbrica.core.jobspec import JobSpec, SpecError, parse_job_spec
from fabbrica.portal.web import (
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
)
from fabbrica.services import examples, job_files, jobs, submission
from fabbrica.services.access import projects as projects_service
from fabbrica.store.models import Job, User

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
LOG_PAGE_BYTES = 256 * 1024  # what one refresh of the log brings at most
MAX_FILES = 50  # files in one portal submission (a bigger workdir: the CLI)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    return _jobs_page(request, who, user, session)


def _jobs_page(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    status: int = 200,
    error: FabbricaError | None = None,
    spec_text: str = "",
) -> HTMLResponse:
    return render(
        request,
        who,
        "jobs.html",
        status,
        jobs=jobs.list_jobs(session, user, limit=100),
        projects=projects_service.list_projects(session, user),
        examples=examples.names(),
        error=error,
        spec_text=spec_text,
    )


def _spec(text: str) -> JobSpec:
    try:
        return parse_job_spec(text, source="the spec")
    except SpecError as exc:
        raise InvalidInput(exc.message, field=f"spec.{exc.field}" if exc.field else "spec") from exc


def _pack(uploads: list[UploadFile], limit: int) -> bytes | None:
    """The uploaded files as a workdir archive (flat: each file by its name)."""
    chosen = [u for u in uploads if u.filename]
    if not chosen:
        return None
    if len(chosen) > MAX_FILES:
        raise InvalidInput(
            f"at most {MAX_FILES} files; submit a bigger workdir with the CLI", "files"
        )
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for upload in chosen:
            name = posixpath.basename((upload.filename or "").replace("\\", "/"))
            if name in ("", ".", ".."):
                raise InvalidInput(f"not a file name: {upload.filename!r}", "files")
            data = upload.file.read(limit + 1)
            total += len(data)
            if total > limit:
                raise InvalidInput(f"the files add up to more than {limit:,} bytes", "files")
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


@router.post("/jobs", response_class=HTMLResponse, dependencies=[CsrfChecked])
def submit_job(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    project: Annotated[str, Form(max_length=40)] = "",
    example: Annotated[str, Form(max_length=64)] = "",
    spec: Annotated[str, Form(max_length=64 * 1024)] = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    ctx = context(request)
    # a refusal undoes the savepoint only: the request's transaction stays usable for the
    # page that names it (a rollback of the whole session would close it)
    savepoint = session.begin_nested()
    try:
        archive: bytes | None
        if example:
            job_spec, archive = examples.load(example)
        else:
            job_spec = _spec(spec)
            archive = _pack(files or [], ctx.upload_max_bytes)
        job_id = queue_job(request, session, user, job_spec, archive, project or None)
    except (InvalidInput, NotFound) as exc:
        savepoint.rollback()
        return _jobs_page(request, who, user, session, 422, exc, spec)
    ctx.wake()  # a control loop in this process (`fabbrica up`) dispatches it now
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def queue_job(
    request: Request,
    session: DbSession,
    user: User,
    spec: JobSpec,
    archive: bytes | None,
    project: str | None,
) -> int:
    """Queue a job submitted from a page (its workdir archive checked and stored) and
    commit; the job's id. InvalidInput or NotFound when refused, nothing stored."""
    ctx = context(request)
    return submission.submit_and_commit(
        session,
        user,
        ctx.catalog,
        spec,
        project_id=project,
        archive=archive,
        files=ctx.files,
        limits=ctx.archive_limits,
        connected=ctx.executors.connected(session),
        single_user=ctx.single_user,
        now=ctx.clock(),
        present=lambda job: job.id,
    )


def _log(request: Request, job: Job, offset: int) -> tuple[str, int]:
    try:
        directory = job_files.job_dir(context(request).executors, job)
    except NotFound:
        return "", offset
    data, after = job_files.read_log(directory, offset, LOG_PAGE_BYTES)
    return data.decode("utf-8", errors="replace"), after


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, job_id: int
) -> Response:
    job = jobs.get_job(session, user, job_id)
    text, offset = _log(request, job, 0)
    return render(
        request,
        who,
        "job.html",
        job=job,
        log=text,
        offset=offset,
        live=not JobState(job.state).finished,
        outputs=_output_names(request, job) if job.state == JobState.SUCCEEDED else [],
    )


@router.get("/jobs/{job_id}/log", response_class=HTMLResponse)
def job_log(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    job_id: int,
    offset: int = Query(default=0, ge=0, le=2**53),
) -> Response:
    """The log from `offset`, for the page's poller (htmx): appended text, the job's state,
    and the next poller while the job has not ended."""
    job = jobs.get_job(session, user, job_id)
    text, after = _log(request, job, offset)
    live = not JobState(job.state).finished or after != offset
    return render(request, who, "job_log.html", job=job, text=text, offset=after, live=live)


@router.post("/jobs/{job_id}/cancel", dependencies=[CsrfChecked])
def cancel_job(request: Request, user: UserDep, session: DbSession, job_id: int) -> Response:
    jobs.cancel(session, user, job_id, now=context(request).clock())
    session.commit()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _archive(request: Request, job: Job) -> bytes:
    """The job's outputs as a gzipped tar, as the API's download packs them."""
    ctx = context(request)
    spec = JobSpec.model_validate_json(job.spec)
    directory = job_files.job_dir(ctx.executors, job)
    return job_files.outputs_archive(directory, spec, ctx.archive_limits)


def _output_names(request: Request, job: Job) -> list[str]:
    """The output files' names, from a walk of the tree: no file is read or packed."""
    ctx = context(request)
    try:
        directory = job_files.job_dir(ctx.executors, job)
        spec = JobSpec.model_validate_json(job.spec)
        return job_files.output_names(directory, spec, ctx.archive_limits)
    except FabbricaError:
        return []


@router.get("/jobs/{job_id}/outputs")
def download_outputs(
    request: Request,
    user: UserDep,
    session: DbSession,
    job_id: int,
    path: str = Query(default="", max_length=4096),
) -> Response:
    """One output file (`path`), sent as it is read, or all of them as a gzipped tar."""
    job = jobs.get_job(session, user, job_id)
    if not path:
        name = f"job-{job.id}-outputs.tar.gz"
        return Response(
            _archive(request, job), media_type="application/gzip", headers=_attachment(name)
        )
    directory = job_files.job_dir(context(request).executors, job)
    try:
        opened = job_files.open_output(directory, JobSpec.model_validate_json(job.spec), path)
    except NotFound:
        raise NotFound(f"job {job.id} has no output {path!r}", field="path") from None
    return StreamingResponse(
        _chunks(opened),
        media_type="application/octet-stream",
        headers=_attachment(posixpath.basename(path)),
    )


def _chunks(opened: BinaryIO, size: int = 256 * 1024) -> Iterator[bytes]:
    with opened:
        while chunk := opened.read(size):
            yield chunk


def _attachment(filename: str) -> dict[str, str]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename) or "output"
    return {"Content-Disposition": f'attachment; filename="{safe}"'}
