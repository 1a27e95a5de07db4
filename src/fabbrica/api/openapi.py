"""The OpenAPI document as the contract: what FastAPI derives from the routes, completed in
one place with what it cannot see.

- Every operation lists the errors it can answer, in the one error shape (`ErrorResponse`,
  whose `code` is an enum): 401 and 503 (the database unavailable) when it needs a token,
  422 when it takes parameters or a body, 413 when it takes a body, and the 400/403/404/409
  its route and services raise (`ROUTE_ERRORS`; tests/unit/test_api_contract.py checks that
  table against the code).
- Request bodies the routes read by hand: POST /jobs (JSON or a multipart form with the
  workdir archive) and an agent's log part (octet-stream).
- Responses that are not JSON: logs (text, with their headers), outputs and workdir archives.
- Request strings cannot hold NUL characters (RequestLimits refuses them), and say so.

`/metrics` (api/metrics.py) is not in the document: it answers Prometheus' text format to
a scraper, outside the JSON API under /api/v1 (docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fabbrica.api.errors import OTHER_CODE, STATUS_CODES
from fabbrica.api.schemas import ErrorResponse
from fabbrica.api.schemas_jobs import JobCreate
from fabbrica.core.jobspec import MAX_TIME_LIMIT_S, JobSpec

Schema = dict[str, Any]

# (method, path under /api/v1) -> the 400/403/404/409/422 its route and the services it calls
# raise themselves. Added to these: 401 for every operation that needs a token, 422 for one
# that takes parameters or a body, 413 and 400 (a body it cannot decode) for one that takes a
# body. Every operation is listed, so a new route must be classified here;
# tests/unit/test_api_contract.py checks each set against the code.
ROUTE_ERRORS: dict[tuple[str, str], frozenset[int]] = {
    ("GET", "/health"): frozenset(),
    ("GET", "/factories"): frozenset(),
    ("GET", "/factories/{factory_id}"): frozenset({404}),
    ("GET", "/access-modes"): frozenset(),
    ("GET", "/sectors"): frozenset(),
    ("GET", "/me"): frozenset(),
    ("POST", "/users"): frozenset({403, 404, 409, 422}),
    ("PUT", "/users/{user_id}/factories"): frozenset({403, 404, 422}),
    ("POST", "/users/{user_id}/suspend"): frozenset({403, 404, 409, 422}),
    ("POST", "/users/{user_id}/reactivate"): frozenset({403, 404, 409, 422}),
    ("GET", "/users"): frozenset({403}),
    ("GET", "/users/{user_id}"): frozenset({403, 404}),
    ("GET", "/users/{user_id}/identities"): frozenset({403, 404}),
    ("GET", "/auth/providers"): frozenset(),
    ("POST", "/auth/device"): frozenset({401, 404, 409, 422}),
    ("DELETE", "/users/{user_id}/identities/{identity_id}"): frozenset({403, 404}),
    ("POST", "/tokens"): frozenset({403, 404, 409, 422}),
    ("GET", "/tokens"): frozenset({403, 404}),
    ("DELETE", "/tokens/{token_id}"): frozenset({404}),
    ("POST", "/organisations"): frozenset({404, 422}),
    ("GET", "/organisations"): frozenset({404}),
    ("GET", "/organisations/{org_id}"): frozenset({404}),
    ("POST", "/organisations/{org_id}/members"): frozenset({403, 404, 422}),
    ("POST", "/organisations/{org_id}/join"): frozenset({404}),
    ("POST", "/projects"): frozenset({404, 422}),
    ("GET", "/projects"): frozenset({404}),
    ("GET", "/projects/{project_id}"): frozenset({404}),
    ("POST", "/projects/{project_id}/invitations"): frozenset({403, 404, 409, 422}),
    ("POST", "/invitations/accept"): frozenset({404, 409}),
    ("DELETE", "/projects/{project_id}/members/{user_id}"): frozenset({403, 404, 409}),
    ("POST", "/projects/{project_id}/pi"): frozenset({403, 404, 422}),
    ("GET", "/calls"): frozenset(),
    ("GET", "/calls/{call_id}"): frozenset({404}),
    ("PATCH", "/calls/{call_id}"): frozenset({403, 404, 422}),
    ("POST", "/calls/{call_id}/reviewers"): frozenset({403, 404, 422}),
    ("POST", "/proposals"): frozenset({403, 404, 409, 422}),
    ("GET", "/proposals"): frozenset({404}),
    ("GET", "/proposals/{proposal_id}"): frozenset({404}),
    ("POST", "/proposals/{proposal_id}/submit"): frozenset({403, 404, 409, 422}),
    ("POST", "/proposals/{proposal_id}/withdraw"): frozenset({403, 404, 409}),
    ("POST", "/proposals/{proposal_id}/reviews"): frozenset({403, 404, 409, 422}),
    ("POST", "/proposals/{proposal_id}/reviewers"): frozenset({403, 404, 409, 422}),
    ("POST", "/proposals/{proposal_id}/decision"): frozenset({403, 404, 409, 422}),
    ("GET", "/allocations"): frozenset({404}),
    ("GET", "/allocations/{allocation_id}"): frozenset({404}),
    ("POST", "/allocations/{allocation_id}/changes"): frozenset({403, 404, 409, 422}),
    ("POST", "/allocations/{allocation_id}/final-report"): frozenset({403, 404, 422}),
    ("GET", "/allocations/{allocation_id}/audit"): frozenset({404}),
    ("GET", "/notices"): frozenset({404}),
    ("GET", "/reports/access"): frozenset({403, 404}),
    ("GET", "/reports/federation"): frozenset({403, 404, 422}),
    ("POST", "/jobs"): frozenset({400, 403, 404, 422}),
    ("GET", "/jobs"): frozenset({404}),
    ("GET", "/jobs/{job_id}"): frozenset({404}),
    ("POST", "/jobs/{job_id}/cancel"): frozenset({404, 409}),
    ("POST", "/jobs/{job_id}/cancel-array"): frozenset({404, 409}),
    ("POST", "/job-batches"): frozenset({400, 403, 404, 422}),
    ("GET", "/jobs/{job_id}/logs"): frozenset({404}),
    ("GET", "/jobs/{job_id}/outputs"): frozenset({404}),
    ("POST", "/notebooks"): frozenset({403, 404, 422}),
    ("GET", "/notebooks"): frozenset({404}),
    ("GET", "/notebooks/{job_id}"): frozenset({404}),
    ("GET", "/usage"): frozenset({404, 422}),
    ("GET", "/templates"): frozenset({404}),
    ("GET", "/templates/{name}"): frozenset({404}),
    ("POST", "/templates/{name}/spec"): frozenset({404, 422}),
    ("POST", "/templates/{name}/jobs"): frozenset({403, 404, 422}),
    ("POST", "/dataset-uploads"): frozenset({404, 409, 422}),
    ("GET", "/dataset-uploads/{upload_id}"): frozenset({404}),
    ("HEAD", "/dataset-uploads/{upload_id}"): frozenset({404}),
    ("PUT", "/dataset-uploads/{upload_id}"): frozenset({404, 409, 422}),
    ("POST", "/dataset-uploads/{upload_id}/commit"): frozenset({404, 409, 422}),
    ("GET", "/datasets"): frozenset({404}),
    ("GET", "/datasets/{dataset_id}"): frozenset({404}),
    ("GET", "/datasets/{dataset_id}/croissant.json"): frozenset({404}),
    ("GET", "/datasets/{dataset_id}/versions/{version}/file"): frozenset({404, 422}),
    ("DELETE", "/datasets/{dataset_id}"): frozenset({404, 409}),
    ("GET", "/models"): frozenset({404}),
    ("GET", "/models/{name}/versions/{version}"): frozenset({404, 422}),
    ("GET", "/models/{name}/versions/{version}/card"): frozenset({404, 422}),
    ("GET", "/models/{name}/versions/{version}/files"): frozenset({404, 422}),
    ("POST", "/agents/{factory_id}/token"): frozenset({403, 404, 409, 422}),
    ("GET", "/agents"): frozenset({403}),
    ("PUT", "/agents/{factory_id}/usernames"): frozenset({403, 404, 409, 422}),
    ("POST", "/agent/sync"): frozenset({403, 404}),
    ("GET", "/agent/accounts"): frozenset({403, 404}),
    ("GET", "/agent/jobs/{job_id}/workdir"): frozenset({403, 404}),
    ("POST", "/agent/jobs/{job_id}/log"): frozenset({403, 404, 409}),
    ("GET", "/agent/jobs/{job_id}/objects/{sha256}"): frozenset({403, 404}),
    ("POST", "/agent/jobs/{job_id}/checkpoint"): frozenset({400, 403, 404, 409, 422}),
    ("GET", "/agent/jobs/{job_id}/checkpoint"): frozenset({403, 404}),
}

_WHY = {
    400: "A body that cannot be read: not UTF-8, or a malformed multipart form.",
    401: "No token, or an unknown, expired or revoked one, or a deactivated user.",
    403: "You may see this but not do it.",
    404: "It does not exist, or you may not see it.",
    409: "It conflicts with the current state (a duplicate, a decided proposal ...).",
    413: "The request body is over the server's limit.",
    422: "A parameter or field is invalid; `field` names it.",
    503: "The database is unavailable; nothing was changed. Try again after `Retry-After`.",
}
_NO_NUL = "^[^\\u0000]*$"  # RequestLimits refuses NUL characters in queries and JSON bodies
_FORMATS = ("binary", "date-time", "date")  # strings whose format already rules out a NUL
_MULTIPART_JOB: Schema = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {"type": "string", "description": "the job spec, YAML or JSON text"},
        "project": {"type": "string", "maxLength": 40, "pattern": _NO_NUL},
        "workdir": {
            "type": "string",
            "format": "binary",
            "description": "the working directory as a tar archive (optionally gzipped)",
        },
    },
}
_LOG_HEADERS: Schema = {
    "X-Next-Offset": {
        "description": "the byte to ask for next",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "X-Job-State": {"description": "the job's state", "schema": {"type": "string"}},
}


def install_openapi(app: FastAPI, prefix: str) -> None:
    """Make `app.openapi()` answer the completed document (built once, then cached)."""

    def openapi() -> Schema:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = complete(schema, prefix)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_codes() -> list[str]:
    """Every `code` an error answer may carry."""
    return sorted({*STATUS_CODES.values(), OTHER_CODE})


_ABOUT = (
    'Every error answers in one shape, `ErrorResponse`: `{"error": {"code", "message", '
    '"field"}}`, with `field` naming the offending field. Each operation lists the errors '
    "it can answer; a method a path does not take gets 405 `method_not_allowed` with an "
    "`Allow` header naming those it takes. See docs/api.md."
)


def complete(schema: Schema, prefix: str) -> Schema:
    schema.setdefault("info", {}).setdefault("description", _ABOUT)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_models(components)
    for (method, path), operation in _operations(schema, prefix):
        _special_bodies(method, path, operation)
        _document_errors(method, path, operation)
        _no_nul(operation, components)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def _operations(schema: Schema, prefix: str) -> Iterator[tuple[tuple[str, str], Schema]]:
    for full, operations in schema.get("paths", {}).items():
        path = full.removeprefix(prefix)
        for method, operation in operations.items():
            yield (method.upper(), path), operation


def _add_models(components: Schema) -> None:
    for model in (ErrorResponse, JobCreate, JobSpec):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in found.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = found
    code = components["ErrorBody"]["properties"]["code"]
    code["enum"] = error_codes()
    # the spec: an object (JobSpec) or YAML/JSON text
    components["JobCreate"]["properties"]["spec"]["anyOf"] = [
        {"$ref": "#/components/schemas/JobSpec"},
        {"type": "string", "description": "YAML or JSON text"},
    ]
    # a time limit is written as a duration, or a number of minutes as Slurm reads it
    resources = components["Resources"]["properties"]
    resources["time_limit"] = {
        "anyOf": [
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_TIME_LIMIT_S // 60,
                "description": "minutes",
            },
            {"type": "string", "description": "30m, 2h, 1h30m, 1d, 01:30:00, 2-00:00"},
        ],
        "default": "60m",
        "description": "at most the partition's limit",
    }
    if "Checkpoint" in components:  # the same durations
        for name, default in (("every", "10m"), ("grace", "60s")):
            components["Checkpoint"]["properties"][name] = {
                **resources["time_limit"],
                "default": default,
                "description": components["Checkpoint"]["properties"][name].get("description", ""),
            }


def _special_bodies(method: str, path: str, operation: Schema) -> None:
    ok = operation.get("responses", {})
    if (method, path) == ("POST", "/jobs"):
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
                "multipart/form-data": {"schema": _MULTIPART_JOB},
            },
        }
    elif (method, path) in (
        ("POST", "/agent/jobs/{job_id}/log"),
        ("POST", "/agent/jobs/{job_id}/checkpoint"),
    ):
        operation["requestBody"] = {
            "required": False,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    elif (method, path) == ("GET", "/jobs/{job_id}/logs"):
        ok["200"] = {
            "description": "The log from byte `offset` (possibly empty).",
            "headers": _LOG_HEADERS,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif (method, path) == ("GET", "/jobs/{job_id}/outputs"):
        ok["200"] = _binary("The job's outputs as a gzipped tar.", "application/gzip")
    elif (method, path) == ("GET", "/agent/jobs/{job_id}/workdir"):
        ok["200"] = _binary("The job's uploaded workdir archive.", "application/x-tar")
    elif (method, path) == ("GET", "/agent/jobs/{job_id}/checkpoint"):
        ok["200"] = _binary("The job's last checkpoint folder, as a tar.", "application/x-tar")


def _binary(description: str, media_type: str) -> Schema:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }


def _document_errors(method: str, path: str, operation: Schema) -> None:
    raised = ROUTE_ERRORS.get((method, path), frozenset())
    statuses = set(raised)
    if operation.get("security"):
        statuses.add(401)
        statuses.add(503)  # a token is looked up in the database
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if operation.get("requestBody"):
        statuses.add(413)
        if "application/octet-stream" not in operation["requestBody"].get("content", {}):
            statuses.add(400)  # FastAPI's answer to a body it cannot decode
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        why = _WHY[status]
        if status == 422 and 422 in raised:
            why += " The route also checks rules this schema cannot state."
        answer: Schema = {
            "description": why,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
        if status == 401:
            answer["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
            }
        if status == 503:
            answer["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            }
        responses[str(status)] = answer


def _no_nul(operation: Schema, components: Schema) -> None:
    """Mark the strings of an operation's parameters and JSON body as NUL-free."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query":
            _strings(parameter.get("schema", {}), components, set())
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        _strings(body.get("schema", {}), components, set())


def _strings(node: Any, components: Schema, seen: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _strings(item, components, seen)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _strings(components.get(name), components, seen)
        return
    plain = "pattern" not in node and "enum" not in node
    if node.get("type") == "string" and plain and node.get("format") not in _FORMATS:
        node["pattern"] = _NO_NUL
    if node.get("type") == "object" and "additionalProperties" in node:
        node.setdefault("propertyNames", {"pattern": _NO_NUL})
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            for child in value.values():
                _strings(child, components, seen)
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not"):
            _strings(value, components, seen)
