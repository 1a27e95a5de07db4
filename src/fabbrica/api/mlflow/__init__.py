"""The subset of MLflow's REST API that the stock `mlflow` client speaks (tracking, the
model registry, proxied artifacts), served by Fabbrica for one project per tracking URI:
`MLFLOW_TRACKING_URI=<server>/mlflow/<project>`, `MLFLOW_TRACKING_TOKEN=<token>`.

A sub-application mounted at /mlflow/{project}: MLflow's error shape
(`{"error_code", "message"}`), which the client reads, instead of Fabbrica's."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fabbrica.api.deps import AppContext
from fabbrica.api.mlflow import artifacts, registry, runs
from fabbrica.core.errors import FabbricaError

MOUNT = "/mlflow/{project}"
PREFIX = "/api/2.0/mlflow"

_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
}


def mlflow_error(status: int, message: str) -> JSONResponse:
    code = _CODES.get(status, "INTERNAL_ERROR")
    # MLflow's server answers 400 for a name taken; its client reads the code, not the status
    sent = 400 if status in (409, 413, 422) else status
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error_code": code, "message": message}, sent, headers=headers)


async def _on_domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FabbricaError)
    text = f"{exc.field}: {exc.message}" if exc.field and exc.status != 404 else exc.message
    return mlflow_error(exc.status, text)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    return mlflow_error(400, f"{where}: {first.get('msg', 'invalid')}")


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return mlflow_error(404, "no such endpoint in Fabbrica's MLflow API (docs/models.md)")
    return mlflow_error(exc.status_code, str(exc.detail))


def create_mlflow_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    app.add_exception_handler(FabbricaError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.include_router(runs.router, prefix=PREFIX)
    app.include_router(registry.router, prefix=PREFIX)
    app.include_router(artifacts.router, prefix=artifacts.PREFIX)
    return app
