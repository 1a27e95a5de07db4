"""`fabbrica --help` grouped by what people do, plain placeholders, the job spec's fields, and
docs/cli.md generated from the same commands (issue 18, items 4 and 5)."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import httpx
import pytest
from pydantic import BaseModel

from fabbrica.cli import docgen, identity_cmds
from fabbrica.cli.app import _GROUPS, command
from fabbrica.cli.helptext import SPEC_FIELDS, spec_fields
from fabbrica.client import Client
from fabbrica.core.identity import Role
from fabbrica.core.jobspec import JobSpec
from tests.conftest import REPO

PLACEHOLDER = re.compile(r"<(?:bool|str|int|float|path|text|int range|float range)>|\{[a-z_]+\}")


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += _paths(sub, (*prefix, name))
    return found


def _help(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    command().main([*args, "--help"], prog_name="fabbrica", standalone_mode=False)
    return capsys.readouterr().out


def test_no_help_shows_type_or_brace_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _paths(command())
    assert ("user", "factories") in paths and len(paths) > 40
    for path in paths:
        text = _help(path, capsys)
        assert "Usage:" in text, path
        assert not PLACEHOLDER.search(text), (path, PLACEHOLDER.findall(text))
    assert "CALL_ID" in _help(("call", "set"), capsys)  # arguments by their upper-case name


def test_commands_are_grouped_by_what_people_do(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help((), capsys)
    for panel in ("Catalog and access", "Jobs", "Data and models", "Operate", "Simulate"):
        assert f"─ {panel} " in text, panel
    assert "─ Commands " not in text  # no command left outside a group
    root = command()
    grouped = {name for entries in _GROUPS.values() for name, _ in entries}
    assert grouped == set(root.commands)  # type: ignore[attr-defined]


def test_run_help_shows_every_field_of_the_job_spec(capsys: pytest.CaptureFixture[str]) -> None:
    def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
        names = []
        for name, info in model.model_fields.items():
            names.append(prefix + name)
            kinds = [info.annotation, *get_args(info.annotation)]  # `Checkpoint | None` too
            nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
            if nested:
                names += fields(nested[0], f"{prefix}{name}.")
        return names

    every = fields(JobSpec)
    assert "resources.time_limit" in every
    assert [path for path, _ in spec_fields()] == every
    missing = [name for name in every if name not in SPEC_FIELDS]
    assert not missing, f"describe these JobSpec fields in helptext.SPEC_FIELDS: {missing}"
    text = " ".join(_help(("run",), capsys).split())
    for name in every:
        assert f"{name}:" in text, name
    assert "required" in text and "default 1h" in text


def test_docs_cli_md_is_generated_from_the_commands() -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    generated = docgen.render()
    assert generated == committed, (
        f"docs/cli.md differs from the commands' help; regenerate it: {docgen.REGENERATE}"
    )
    assert "### `fabbrica user factories USER_ID [FACTORIES...] [--json]`" in generated
    assert "`resources.gpus`" in generated  # the spec's fields, from the model


def test_operator_factories_are_sent_as_the_api_expects(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Request shape only (httpx MockTransport): the server side is built on another branch."""
    seen: list[tuple[str, str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.method, request.url.path, body))
        user = {"id": 7, "email": "op@it4lia.it", "role": "operator", "factories": ["it4lia"]}
        return httpx.Response(200, json={**user, **body})

    def fake_client() -> Client:  # the SDK's Client, on a transport that records requests
        api = Client("http://fabbrica.test", "t")
        api._http.close()
        api._http = httpx.Client(
            base_url="http://fabbrica.test/api/v1", transport=httpx.MockTransport(answer)
        )
        return api

    monkeypatch.setattr(identity_cmds, "client", fake_client)
    identity_cmds.user_add(
        "op@it4lia.it", name="Op", role=Role.OPERATOR, factories=["it4lia", "jaif"]
    )
    identity_cmds.user_factories(7, ["leonardo"], json_out=True)
    identity_cmds.user_factories(7, None, json_out=True)
    assert seen[0][:2] == ("POST", "/api/v1/users")
    assert seen[0][2]["factories"] == ["it4lia", "jaif"] and seen[0][2]["role"] == "operator"
    assert seen[1] == ("PUT", "/api/v1/users/7/factories", {"factories": ["leonardo"]})
    assert seen[2] == ("PUT", "/api/v1/users/7/factories", {"factories": []})
    out = capsys.readouterr().out
    assert "factories  it4lia, jaif" in out  # the user's factories shown
    with fake_client() as api:  # the SDK's methods behind the commands, called directly
        assert api.set_user_factories(7, ("jaif",))["factories"] == ["jaif"]
        api.create_user("u@x.eu", "U")  # no factories: the key is left out
    assert seen[3] == ("PUT", "/api/v1/users/7/factories", {"factories": ["jaif"]})
    assert "factories" not in seen[4][2] and seen[4][2]["role"] == "user"
