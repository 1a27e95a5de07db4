"""What the API tests share: the error-shape check and the response type they read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import select

from fabbrica.store.db import Database
from fabbrica.store.models import ApiToken, Base

API = "/api/v1"
Headers = dict[str, str]
JSON = {"Content-Type": "application/json"}


class Response(Protocol):
    """What the tests read from a TestClient response (httpx or its successor)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def assert_error(r: Response, status: int, code: str, field: str | None = None) -> None:
    """`r` is the one error shape, with this status, code and field."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["field"] == field, body
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer"


Rows = dict[str, list[tuple[Any, ...]]]


def snapshot(db: Database) -> Rows:
    """Every row of every table (but a token's last use, which reading updates): compare
    two snapshots to show that a refused request changed nothing."""
    rows: Rows = {}
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [
                c
                for c in table.columns
                if not (table.name == ApiToken.__tablename__ and c.name == "last_used_at")
            ]
            query = select(*columns).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in conn.execute(query)]
    return rows
