from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from fabbrica.api.deps import (
    BearerDep,
    CatalogDep,
    ContextDep,
    CurrentUser,
    SessionDep,
    authenticated,
)
from fabbrica.api.multipart import Part, parse_form
from fabbrica.api.params import MAX_ID, MAX_OFFSET
from fabbrica.api.schemas_jobs import (
    ArrayCancelled,
    JobBatchCreate,
    JobCreate,
    JobPublic,
    UsageGroup,
    UsageRow,
)
from fabbrica.core.errors import InvalidInput
from fabbrica.core.jobspec import JobSpec, SpecError, parse_job_spec, spec_from_data
from fabbrica.services import job_files, jobs, submission, usage
from fabbrica.store.models import Job

router = APIRouter(tags=["jobs"])


def job_public(job: Job) -> JobPublic:
    return JobPublic(
        id=job.id,
        name=job.name,
        project=job.project.id or "",
        state=job.state,
        reason=job.reason,
        factory=job.factory_id,
        partition=job.partition_id,
        gpus=job.gpus,
        nodes=job.nodes,
        gpu_model=job.gpu_model,
        time_limit_s=job.time_limit_s,
        gpu_hours=job.gpu_hours,
        reserved_gpu_hours=job.reserved_gpu_hours,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        exit_code=job.exit_code,
        cancel_requested=job.cancel_requested,
        array_id=job.array_id,
        array_index=job.array_index,
        run=job.run,
    )


_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]{0,40}")


@dataclass(frozen=True)
class _Submission:
    """A submission as received: the whole body and its content type; nothing parsed."""

    body: bytes
    content_type: str


def _parse_submission(raw: _Submission) -> tuple[JobSpec, str | None, bytes | None]:
    spec, project, archive = _read_submission(raw)
    if project is not None and not _PROJECT_ID.fullmatch(project):
        raise InvalidInput("a project id is 1 to 40 letters, digits, - and _", "project")
    return spec, project or None, archive


def _read_submission(raw: _Submission) -> tuple[JobSpec, str | None, bytes | None]:
    """The spec (YAML text or JSON), the project and the workdir archive of a submission:
    a multipart form (`spec`, `project`, `workdir` file) or a JSON body (JobCreate). Run in
    a worker thread: YAML, JSON and multipart parsing never hold the event loop."""
    if raw.content_type.startswith("multipart/form-data"):
        form = parse_form(raw.content_type, raw.body)
        spec_part, project_part = form.get("spec"), form.get("project")
        upload = form.get("workdir")
        if spec_part is None:  # a plain field, or a file (curl -F spec=@job.yaml)
            raise InvalidInput("the form needs a `spec` field (YAML or JSON text)", "spec")
        project = _form_text(project_part, "project") if project_part is not None else None
        archive = None
        if upload is not None and upload.filename is not None:
            archive = bytes(upload.data)
        return _parse(_form_text(spec_part, "spec")), project, archive
    if raw.content_type.startswith("application/x-www-form-urlencoded"):
        fields = dict(parse_qsl(raw.body.decode("utf-8", "replace"), keep_blank_values=True))
        if "spec" not in fields:
            raise InvalidInput("the form needs a `spec` field (YAML or JSON text)", "spec")
        return _parse(fields["spec"]), fields.get("project"), None
    try:
        body = JobCreate.model_validate_json(raw.body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        raise InvalidInput(error["msg"], field=field) from exc
    spec = _parse(body.spec) if isinstance(body.spec, str) else _from_data(body.spec)
    return spec, body.project, None


def _form_text(part: Part, name: str) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name} is not UTF-8 text", field=name) from exc


def _parse(text: str) -> JobSpec:
    try:
        return parse_job_spec(text)
    except SpecError as exc:
        raise InvalidInput(exc.message, field=f"spec.{exc.field}" if exc.field else "spec") from exc


def _from_data(data: dict[str, Any]) -> JobSpec:
    try:
        return spec_from_data(data)
    except SpecError as exc:
        raise InvalidInput(exc.message, field=f"spec.{exc.field}" if exc.field else "spec") from exc


@router.post("/jobs", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
async def submit_job(request: Request, ctx: ContextDep, credentials: BearerDep) -> JobPublic:
    """Submit a job: JSON `{spec, project}`, or a multipart form with `spec` (YAML or JSON
    text), `project` and a `workdir` tar archive. Refused with 422 when it can never run or
    its worst case exceeds every eligible allocation; a workdir archive over its budgets
    (entries, unpacked size, ratio) or holding anything but files, directories and links
    inside it is refused naming `workdir`, and nothing of it stays on disk."""
    raw = _Submission(await request.body(), request.headers.get("content-type", ""))

    def work() -> JobPublic:
        # the whole submission in one worker thread and one transaction: sign-in, checks,
        # the job's row, commit (no thread hop per dependency)
        with ctx.db.session() as session:
            actor = authenticated(ctx, session, credentials)
            spec, project, archive = _parse_submission(raw)
            return submission.submit_and_commit(
                session,
                actor,
                ctx.catalog,
                spec,
                project_id=project,
                archive=archive,
                files=ctx.files,
                limits=ctx.archive_limits,
                connected=ctx.executors.seen(session),
                single_user=ctx.single_user,
                now=ctx.clock(),
                present=job_public,
                recheck=lambda: ctx.executors.connected(session),
            )

    public = await run_in_threadpool(work)
    ctx.wake()  # a control loop in this process (`fabbrica up`) dispatches it now
    return public


@router.post("/job-batches", response_model=list[JobPublic], status_code=status.HTTP_201_CREATED)
def submit_batch(
    batch: JobBatchCreate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    catalog: CatalogDep,
) -> list[JobPublic]:
    """Submit up to 1,000 jobs in one request: `{"jobs": [{spec, project}, ...]}`, specs
    without a workdir (a spec with `array` queues all its tasks). All are accepted or none:
    the first refusal names its place (`jobs.3.spec.resources`) and nothing is queued."""
    parsed = []
    for n, item in enumerate(batch.jobs):
        try:
            spec = _parse(item.spec) if isinstance(item.spec, str) else _from_data(item.spec)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field=f"jobs.{n}.{exc.field}") from exc
        parsed.append((spec, item.project))
    queued = jobs.submit_batch(
        session,
        actor,
        catalog,
        parsed,
        connected=ctx.executors.seen(session),
        single_user=ctx.single_user,
        now=ctx.clock(),
        recheck=lambda: ctx.executors.connected(session),
    )
    shown = [job_public(j) for j in queued]
    session.commit()
    ctx.wake()
    return shown


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(
    session: SessionDep,
    actor: CurrentUser,
    project_id: str | None = Query(default=None, max_length=40),
    array_id: int | None = Query(
        default=None, ge=1, le=MAX_ID, description="the tasks of this array, by index"
    ),
) -> list[JobPublic]:
    """Jobs of your projects, newest first (staff: all); with `array_id`, every task of
    that array in index order."""
    found = jobs.list_jobs(session, actor, project_id=project_id, array_id=array_id)
    return [job_public(j) for j in found]


def _job(session: Session, actor: Any, job_id: int) -> Job:
    return jobs.get_job(session, actor, job_id)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(
    session: SessionDep, actor: CurrentUser, job_id: int = Path(ge=1, le=MAX_ID)
) -> JobPublic:
    """One job, with the reason it waits or how it ended."""
    return job_public(_job(session, actor, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    job_id: int = Path(ge=1, le=MAX_ID),
) -> JobPublic:
    """Cancel: a queued job at once, a running one on the control loop's next round."""
    return job_public(jobs.cancel(session, actor, job_id, now=ctx.clock()))


@router.post("/jobs/{job_id}/cancel-array", response_model=ArrayCancelled)
def cancel_array(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    job_id: int = Path(ge=1, le=MAX_ID),
) -> ArrayCancelled:
    """Cancel every unfinished task of the array this job belongs to (as `scancel` of an
    array's id): queued tasks at once, running ones on the control loop's next round."""
    array_id, cancelled, stopping = jobs.cancel_array(session, actor, job_id, now=ctx.clock())
    return ArrayCancelled(array_id=array_id, cancelled=cancelled, stopping=stopping)


@router.get("/jobs/{job_id}/logs")
def job_logs(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    job_id: int = Path(ge=1, le=MAX_ID),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET, description="a byte offset"),
) -> Response:
    """The job's output from byte `offset`; `X-Next-Offset` says where to go on (a job not
    started yet: nothing yet, its state in `X-Job-State`)."""
    job = _job(session, actor, job_id)
    data, next_offset = job_files.job_log(ctx.executors, job, offset)
    headers = {"X-Next-Offset": str(next_offset), "X-Job-State": job.state}
    return Response(data, media_type="text/plain; charset=utf-8", headers=headers)


@router.get("/jobs/{job_id}/outputs")
def job_outputs(
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    job_id: int = Path(ge=1, le=MAX_ID),
) -> Response:
    """The job's outputs as a gzipped tar."""
    job = _job(session, actor, job_id)
    spec = JobSpec.model_validate_json(job.spec)
    data = job_files.outputs_archive(
        job_files.job_dir(ctx.executors, job), spec, ctx.archive_limits
    )
    return Response(data, media_type="application/gzip")


@router.get("/usage", response_model=list[UsageRow])
def usage_report(
    session: SessionDep,
    actor: CurrentUser,
    by: UsageGroup = Query(default="project"),
    project_id: str | None = Query(default=None, max_length=40),
) -> list[UsageRow]:
    """Charged GPU-hours by project, factory, org, country, sector or mode."""
    rows = usage.usage(session, actor, by=by, project_id=project_id)
    return [UsageRow.model_validate(r) for r in rows]
