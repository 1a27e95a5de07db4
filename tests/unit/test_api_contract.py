"""The API's contract cannot drift: the error codes in docs/api.md are those the code sends,
and the OpenAPI document lists, for every operation, the errors its route can raise."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from fabbrica.api.app import API_PREFIX, create_app
from fabbrica.api.deps import AppContext
from fabbrica.api.errors import OTHER_CODE, STATUS_CODES
from fabbrica.api.openapi import ROUTE_ERRORS, error_codes
from fabbrica.api.params import RUN_TAG_IN, digits_at_most
from fabbrica.api.schemas_jobs import UsageGroup
from fabbrica.catalog.loader import load_catalog
from fabbrica.services.usage import GROUPS
from fabbrica.store.db import Database
from tests.conftest import REPO

SRC = REPO / "src" / "fabbrica"
ERRORS = {"InvalidInput": 422, "NotFound": 404, "Conflict": 409, "Forbidden": 403}


@pytest.fixture(scope="module")
def openapi() -> Iterator[dict[str, Any]]:
    db = Database("sqlite://")
    yield create_app(AppContext(db=db, catalog=load_catalog())).openapi()
    db.dispose()


def _trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def codes_in_the_code() -> dict[str, set[str]]:
    """Every error `code` the source can send, with the statuses it goes with: the status
    table of api.errors, each FabbricaError subclass's `code`/`status`, and every literal
    code handed to error_response() or an ASGI guard's _error()."""
    found: dict[str, set[str]] = {code: {str(s)} for s, code in STATUS_CODES.items()}
    found.setdefault(OTHER_CODE, set()).add("other")
    classes: dict[str, tuple[list[str], str | None, str | None]] = {}
    for _, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                attrs = {
                    t.id: s.value
                    for s in node.body
                    if isinstance(s, ast.Assign)
                    for t in s.targets
                    if isinstance(t, ast.Name)
                }
                code = _str(attrs.get("code"))
                status = attrs.get("status")
                status_text = (
                    str(status.value)
                    if isinstance(status, ast.Constant) and isinstance(status.value, int)
                    else None
                )
                bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                classes[node.name] = (bases, code, status_text)
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name in ("error_response", "_error") and len(node.args) >= 2:
                    code = _str(node.args[1])
                    status = node.args[0]
                    if code is not None and isinstance(status, ast.Constant):
                        found.setdefault(code, set()).add(str(status.value))
    errors = {"FabbricaError"}
    grew = True
    while grew:
        grew = False
        for name, (bases, _, _) in classes.items():
            if name not in errors and errors & set(bases):
                errors.add(name)
                grew = True
    for name in errors:
        _, code, status_text = classes[name]
        if code is not None:
            found.setdefault(code, set()).add(status_text or "other")
    found[OTHER_CODE] = {"other"}  # FabbricaError's own 400 stands for "anything else"
    return found


def codes_in_the_docs() -> dict[str, set[str]]:
    text = (REPO / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}|other) \|", text, re.M)
    return {code: {status} for code, status in rows}


def test_error_codes_in_the_docs_are_those_the_code_sends() -> None:
    code, docs = codes_in_the_code(), codes_in_the_docs()
    assert {"invalid", "not_found", "too_large", "method_not_allowed"} <= set(code)  # reach
    assert set(docs) == set(code), (
        f"sent but not in docs/api.md: {sorted(set(code) - set(docs))}; "
        f"in docs/api.md but never sent: {sorted(set(docs) - set(code))}"
    )
    for name, statuses in code.items():
        assert docs[name] == statuses, (name, statuses, docs[name])


def test_the_error_schema_enumerates_every_code(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["code"]["enum"] == error_codes()
    assert set(error_codes()) == set(codes_in_the_code())
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is not ours


def _operations(openapi: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path.removeprefix(API_PREFIX)): op
        for path, ops in openapi["paths"].items()
        for method, op in ops.items()
    }


def test_every_operation_is_classified(openapi: dict[str, Any]) -> None:
    operations = _operations(openapi)
    assert len(operations) >= 50
    assert set(operations) == set(ROUTE_ERRORS), (
        f"add to ROUTE_ERRORS: {sorted(set(operations) - set(ROUTE_ERRORS))}; "
        f"remove: {sorted(set(ROUTE_ERRORS) - set(operations))}"
    )


def test_every_operation_documents_its_errors_in_the_error_shape(
    openapi: dict[str, Any],
) -> None:
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for (method, path), op in _operations(openapi).items():
        responses = op["responses"]
        documented = {int(s) for s in responses if not s.startswith("2")}
        expected = set(ROUTE_ERRORS[(method, path)])
        if op.get("security"):
            expected |= {401, 503}
        if op.get("parameters") or op.get("requestBody"):
            expected.add(422)
        if op.get("requestBody"):
            expected.add(413)
        assert expected <= documented, (method, path, sorted(expected - documented))
        if 503 in documented:
            assert "Retry-After" in responses["503"]["headers"]
        for status in documented:
            assert responses[str(status)]["content"]["application/json"]["schema"] == error
        if 401 in documented:
            assert "WWW-Authenticate" in responses["401"]["headers"]
    health = _operations(openapi)[("GET", "/health")]
    assert set(health["responses"]) == {"200"}  # needs no token, takes nothing


def test_job_submission_documents_json_and_multipart(openapi: dict[str, Any]) -> None:
    body = _operations(openapi)[("POST", "/jobs")]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    form = body["multipart/form-data"]["schema"]
    assert form["required"] == ["spec"]
    assert form["properties"]["workdir"]["format"] == "binary"
    spec = openapi["components"]["schemas"]["JobCreate"]["properties"]["spec"]
    assert {"$ref": "#/components/schemas/JobSpec"} in spec["anyOf"]


def test_usage_groups_are_an_enum(openapi: dict[str, Any]) -> None:
    assert set(get_args(UsageGroup)) == set(GROUPS)
    (by,) = [p for p in _operations(openapi)[("GET", "/usage")]["parameters"] if p["name"] == "by"]
    assert sorted(by["schema"]["enum"]) == sorted(GROUPS)


def test_non_json_answers_say_their_media_type(openapi: dict[str, Any]) -> None:
    operations = _operations(openapi)
    logs = operations[("GET", "/jobs/{job_id}/logs")]["responses"]["200"]
    assert set(logs["content"]) == {"text/plain"}
    assert {"X-Next-Offset", "X-Job-State"} <= set(logs["headers"])
    outputs = operations[("GET", "/jobs/{job_id}/outputs")]["responses"]["200"]
    assert set(outputs["content"]) == {"application/gzip"}


# --- which errors each route can raise, read from the source ------------------------------


def _functions() -> dict[str, list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]]:
    found: dict[str, list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
    for path, tree in _trees():
        module = path.relative_to(SRC).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.setdefault(node.name, []).append((module, node))
    return found


def _foreign_names() -> dict[str, set[str]]:
    """module -> the names it imports from outside Fabbrica (`from pydantic import
    create_model`, `import httpx`): a call through one of them is not Fabbrica's."""
    found: dict[str, set[str]] = {}
    for path, tree in _trees():
        names = found.setdefault(path.relative_to(SRC).as_posix(), set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                if not (node.module or "").startswith("fabbrica"):
                    names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if not alias.name.startswith("fabbrica"):
                        names.add(alias.asname or alias.name.split(".")[0])
    return found


class Raises:
    """The domain errors a function raises, itself or through the functions it calls
    (resolved by name: `module.f(...)` to f in that module, `f(...)` to f in the same module
    or the only one of that name; never a name the calling module imports from another
    library). An over-approximation, never an under-one, for the route handlers' service
    calls."""

    def __init__(self) -> None:
        self.functions = _functions()
        self.foreign = _foreign_names()
        self.memo: dict[tuple[str, int], frozenset[int]] = {}

    def of(
        self,
        module: str,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        stack: frozenset[tuple[str, int]] = frozenset(),
    ) -> frozenset[int]:
        key = (module, node.lineno)
        if key in self.memo:
            return self.memo[key]
        if key in stack:
            return frozenset()
        found: set[int] = set()
        for inner in ast.walk(node):
            if isinstance(inner, ast.Raise) and isinstance(inner.exc, ast.Call):
                func = inner.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in ERRORS:
                    found.add(ERRORS[name])
            if isinstance(inner, ast.Call):
                for target_module, target in self._targets(module, inner.func):
                    found |= self.of(target_module, target, stack | {key})
        self.memo[key] = frozenset(found)
        return self.memo[key]

    def _targets(
        self, module: str, func: ast.expr
    ) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        if isinstance(func, ast.Name):
            name, owner = func.id, None
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            name = func.attr
        else:
            return []
        if (owner or name) in self.foreign.get(module, set()):
            return []
        candidates = [
            (m, n)
            for m, n in self.functions.get(name, [])
            if not m.startswith(("cli/", "sim/", "agent/", "backends/"))
        ]
        if owner is not None:
            named = [(m, n) for m, n in candidates if Path(m).stem == owner]
            candidates = named or candidates
        else:
            local = [(m, n) for m, n in candidates if m == module]
            candidates = local or candidates
        return candidates if len(candidates) <= 3 else []


def routes_and_their_raises() -> dict[tuple[str, str], frozenset[int]]:
    raises = Raises()
    found = {}
    for path in sorted((SRC / "api" / "routes").glob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr in ("get", "post", "put", "patch", "delete")
                    and decorator.args
                ):
                    route = _str(decorator.args[0])
                    assert route is not None
                    found[(decorator.func.attr.upper(), route)] = raises.of(module, node)
    return found


def test_route_errors_list_what_each_route_can_raise() -> None:
    found = routes_and_their_raises()
    assert found[("GET", "/users")] == {403}  # the analysis reaches services
    missing = {
        op: sorted(statuses - ROUTE_ERRORS.get(op, frozenset()))
        for op, statuses in found.items()
        if statuses - ROUTE_ERRORS.get(op, frozenset())
    }
    assert not missing, f"add to fabbrica.api.openapi.ROUTE_ERRORS: {missing}"


def test_the_route_table_in_the_docs_is_one_table_of_real_routes(
    openapi: dict[str, Any],
) -> None:
    """docs/api.md's routes form one table (a blank line would end it, and Markdown would
    show the rest as text), and every route it lists exists; test_docs checks the converse."""
    lines = (REPO / "docs" / "api.md").read_text().splitlines()
    rows = [i for i, line in enumerate(lines) if re.match(r"^\| `[A-Z]+ /api/v1/", line)]
    assert len(rows) >= 50
    assert rows == list(range(rows[0], rows[0] + len(rows))), "the route table is split"
    assert lines[rows[0] - 2].startswith("| method and path |")
    documented = {re.findall(r"^\| `([A-Z]+) (\S+)`", lines[i])[0] for i in rows}
    real = {(m, API_PREFIX + p) for m, p in _operations(openapi)}
    assert documented - real == set(), sorted(documented - real)


@pytest.mark.parametrize(
    ("number", "fits"),
    [(0, True), (7, True), (999_999_999, True), (2**31 - 1, True), (2**31, False),
     (3_025_145_195, False), (9_999_999_999, False), (10**12, False)],
)  # fmt: skip
def test_a_run_tag_names_only_ids_a_database_integer_holds(number: int, fits: bool) -> None:
    """fab-3025145195 once reached PostgreSQL's integer and answered 500 (schemathesis)."""
    assert bool(re.match(RUN_TAG_IN, f"fab-{number}")) is fits
    assert re.fullmatch(digits_at_most(1234), "1235") is None
    assert re.fullmatch(digits_at_most(1234), "0999") is not None
