"""MLflow's proxied artifacts (`mlflow-artifacts:/` URIs): upload, download and list a
run's files, kept under the data directory (tracking/<project>/<experiment>/<run>/...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fabbrica.api.deps import ContextDep, SessionDep
from fabbrica.api.mlflow.deps import TrackerDep
from fabbrica.core.errors import NotFound, Unauthenticated
from fabbrica.services import tracking

PREFIX = "/api/2.0/mlflow-artifacts"
router = APIRouter()


def _files(ctx: ContextDep) -> Path:
    if ctx.files is None:
        raise NotFound("this server keeps no artifacts (no data directory)", field="path")
    return ctx.files


@router.put("/artifacts/{path:path}")
async def upload(path: str, request: Request, ctx: ContextDep) -> dict[str, Any]:
    data = await request.body()
    secret = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    project = str(request.path_params.get("project", ""))

    def store() -> None:
        if not secret:
            raise Unauthenticated("missing bearer token (set MLFLOW_TRACKING_TOKEN)")
        with ctx.db.session() as session:
            who = tracking.tracker(session, secret, project, ctx.clock())
            tracking.write_artifact(tracking.artifact_path(session, who, _files(ctx), path), data)

    await run_in_threadpool(store)
    return {}


@router.get("/artifacts/{path:path}")
def download(path: str, who: TrackerDep, session: SessionDep, ctx: ContextDep) -> FileResponse:
    target = tracking.artifact_path(session, who, _files(ctx), path)
    if not target.is_file():
        raise NotFound(f"no artifact {path}", field="path")
    return FileResponse(target, media_type="application/octet-stream")


@router.get("/artifacts")
def list_files(
    who: TrackerDep,
    session: SessionDep,
    ctx: ContextDep,
    path: Annotated[str, Query()] = "",
) -> dict[str, Any]:
    target = tracking.artifact_path(session, who, _files(ctx), path)
    if target.is_file():
        return {
            "files": [{"path": target.name, "is_dir": False, "file_size": target.stat().st_size}]
        }
    return {
        "files": [
            {"path": p, "is_dir": d, **({} if d else {"file_size": s})}
            for p, d, s in tracking.list_artifacts(target, target)
        ]
    }
