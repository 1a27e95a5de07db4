"""The docs match the code: every setting, CLI command and API route is documented."""

from __future__ import annotations

import re

import typer.main

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.loader import load_catalog
from fabbrica.cli.app import app as cli_app
from fabbrica.settings import Settings
from fabbrica.store.db import Database
from tests.conftest import REPO

DOCS = REPO / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`FABBRICA_{name.upper()}`" in text, name


def _commands(group: object, prefix: str) -> list[str]:
    found = []
    for name, cmd in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}"
        if hasattr(cmd, "commands"):
            found += _commands(cmd, path)
        else:
            found.append(path)
    return found


def test_every_cli_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _commands(typer.main.get_command(cli_app), "fabbrica")
    assert "fabbrica token revoke" in commands  # the walk reaches nested groups
    for command in commands:
        assert re.search(rf"^### `{re.escape(command)}\b", text, re.M), command


def test_every_api_route_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    db = Database("sqlite://")
    app = create_app(AppContext(db=db, catalog=load_catalog()))
    routes = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(routes) >= 10
    for method, path in routes:
        assert f"`{method} {path}`" in text, (method, path)
    db.dispose()
