"""The SDK without a server: where it finds the API and the token, how errors are built and
translated for the CLI, what it checks before sending, and that its types match the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import fabbrica
from fabbrica.api import schemas, schemas_access, schemas_agents, schemas_jobs
from fabbrica.cli.client import cli_error
from fabbrica.cli.errors import BAD_INPUT, FAILURE
from fabbrica.client import (
    DEFAULT_URL,
    FINISHED_STATES,
    ApiError,
    Client,
    ConfigError,
    ConnectError,
    JobSpecError,
    NoTokenError,
    config_path,
    pack_workdir,
    read_config,
    types,
    write_config,
)
from fabbrica.core.jobs import FINISHED
from tests.cli.server import free_port


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FABBRICA_URL / FABBRICA_TOKEN; the config file in tmp_path (not written yet)."""
    monkeypatch.delenv("FABBRICA_URL", raising=False)
    monkeypatch.delenv("FABBRICA_TOKEN", raising=False)
    monkeypatch.setenv("FABBRICA_CONFIG", str(tmp_path / "config.json"))
    return tmp_path / "config.json"


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_arguments_win_over_the_environment_which_wins_over_the_config_file(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client() as fab:
        assert (fab.url, fab.token) == (DEFAULT_URL, None)
    assert write_config("http://saved:1/", "saved-token") == env == config_path()
    assert env.stat().st_mode & 0o777 == 0o600
    assert read_config() == {"url": "http://saved:1/", "token": "saved-token"}
    with Client() as fab:
        assert (fab.url, fab.token) == ("http://saved:1", "saved-token")
    monkeypatch.setenv("FABBRICA_URL", "http://env:2")
    with Client() as fab:
        assert (fab.url, fab.token) == ("http://env:2", "saved-token")
    monkeypatch.setenv("FABBRICA_TOKEN", "env-token")
    with Client() as fab:
        assert (fab.url, fab.token) == ("http://env:2", "env-token")
    with Client("http://arg:3/", "arg-token") as fab:
        assert (fab.url, fab.token) == ("http://arg:3", "arg-token")
        assert fab._http.headers["Authorization"] == "Bearer arg-token"
        assert "arg-token" not in repr(fab)  # a notebook shows reprs
    assert fab._http.is_closed  # the `with` closed it


def test_a_broken_config_file_is_a_config_error_only_when_it_is_needed(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="does not hold a JSON object"):
        Client()
    env.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        Client(closed_url())  # the token is still to be found
    Client(closed_url(), "x").close()  # both given: the file is not read
    monkeypatch.setenv("FABBRICA_URL", closed_url())
    monkeypatch.setenv("FABBRICA_TOKEN", "x")
    Client().close()


def test_without_a_token_nothing_is_sent_and_without_a_server_a_connect_error(
    env: Path,
) -> None:
    url = closed_url()
    with Client(url) as fab:
        with pytest.raises(NoTokenError):
            fab.me()  # refused before connecting: else it would be a ConnectError
        with pytest.raises(ConnectError) as caught:
            fab.health()  # the one call that needs no token
    assert caught.value.url == url and str(caught.value).startswith(
        f"cannot reach Fabbrica at {url}"
    )


def test_api_errors_carry_status_code_field_and_message() -> None:
    body = {"error": {"code": "invalid", "message": "at least 1", "field": "months"}}
    error = ApiError.from_response(httpx.Response(422, json=body))
    assert (error.status, error.code, error.field, error.message) == (
        422,
        "invalid",
        "months",
        "at least 1",
    )
    assert str(error) == "months: at least 1 (HTTP 422)"
    body = {"error": {"code": "invalid", "message": "months: at least 1", "field": "months"}}
    assert str(ApiError.from_response(httpx.Response(422, json=body))) == (
        "months: at least 1 (HTTP 422)"
    )
    proxy = ApiError.from_response(httpx.Response(502, text="Bad gateway from the proxy"))
    assert (proxy.status, proxy.code, proxy.field, proxy.message) == (
        502,
        "error",
        None,
        "Bad gateway from the proxy",
    )
    assert isinstance(proxy, fabbrica.ClientError)


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (
            ApiError(422, "invalid", "at least 1", "months"),
            BAD_INPUT,
            "months: at least 1 (HTTP 422)",
        ),
        (ApiError(404, "not_found", "no job 9"), BAD_INPUT, "no job 9 (HTTP 404)"),
        (ApiError(409, "conflict", "taken"), BAD_INPUT, "taken (HTTP 409)"),
        (ApiError(413, "too_large", "big"), BAD_INPUT, "big (HTTP 413)"),
        (ApiError(403, "forbidden", "admins only"), FAILURE, "admins only (HTTP 403)"),
        (ApiError(401, "unauthenticated", "bad token"), FAILURE, "bad token (HTTP 401)"),
        (ApiError(500, "error", "boom"), FAILURE, "boom (HTTP 500)"),
        (ConnectError("http://h:1", "refused"), FAILURE, "is `fabbrica up` running there?"),
        (NoTokenError("x"), BAD_INPUT, "no API token: set FABBRICA_TOKEN or run `fabbrica login`"),
        (ConfigError("cannot read the config file f"), FAILURE, "cannot read the config file f"),
        (JobSpecError("job.yaml: colour: unknown field", "colour"), BAD_INPUT, "colour: unknown"),
    ],
)
def test_the_cli_turns_sdk_errors_into_messages_and_exit_codes(
    error: fabbrica.ClientError, code: int, text: str
) -> None:
    translated = cli_error(error)
    assert translated.exit_code == code and text in translated.message


def test_specs_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with Client(closed_url(), "x") as fab:  # were anything sent: ConnectError
        with pytest.raises(JobSpecError, match="cannot read") as unreadable:
            fab.submit(tmp_path / "missing.yaml")
        assert unreadable.value.field is None
        spec = tmp_path / "job.yaml"
        spec.write_text("name: x\nrun: y\ncolour: blue\n")
        with pytest.raises(JobSpecError, match=f"^{spec}: colour: ") as invalid:
            fab.submit(spec)
        assert invalid.value.field == "colour"
        spec.write_text("name: x\nrun: y\nworkdir: nowhere\n")
        with pytest.raises(JobSpecError, match="workdir 'nowhere' is not a directory") as folder:
            fab.submit(spec)
        assert folder.value.field == "workdir"
        with pytest.raises(JobSpecError) as data:
            fab.submit({"name": "x", "run": "y", "resources": {"time_limit": "forever"}})
        assert data.value.field == "resources.time_limit"
        with pytest.raises(ConnectError):  # a good spec does go out
            fab.submit({"name": "x", "run": "y"}, workdir=tmp_path)


def test_a_spec_files_workdir_must_stay_in_its_folder_unless_named(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b"
    home.mkdir(parents=True)
    spec = home / "job.yaml"
    with Client(closed_url(), "x") as fab:  # were anything sent: ConnectError
        for written in ("../..", "up"):  # `up` is a symlink inside that points outside
            (home / "up").unlink(missing_ok=True)
            (home / "up").symlink_to(tmp_path)
            spec.write_text(f"name: x\nrun: y\nworkdir: {written}\n")
            with pytest.raises(JobSpecError, match="outside the spec's folder") as escaped:
                fab.submit(spec)
            assert escaped.value.field == "workdir" and str(tmp_path) in escaped.value.message
        with pytest.raises(ConnectError):  # named by the caller, the folder passes the check
            fab.submit(spec, workdir=tmp_path)
        spec.write_text("name: x\nrun: y\nworkdir: .\n")
        with pytest.raises(ConnectError):  # inside: passes
            fab.submit(spec)


def test_the_workdir_is_packed_without_caches_vcs_or_symlinks(tmp_path: Path) -> None:
    (tmp_path / "src" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "train.py").write_text("print(1)")
    (tmp_path / "src" / "__pycache__" / "train.pyc").write_bytes(b"\0")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / "link.csv").symlink_to(tmp_path / "data.csv")
    with tarfile.open(fileobj=BytesIO(pack_workdir(tmp_path)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["data.csv", "src/train.py"]
        member = tar.extractfile("src/train.py")
        assert member is not None and member.read() == b"print(1)"


SCHEMAS: list[tuple[Any, type[BaseModel]]] = [
    (types.Health, schemas.Health),
    (types.Factory, schemas.FactorySummary),
    (types.FactoryDetail, schemas.FactoryDetail),
    (types.Sector, schemas.SectorPublic),
    (types.User, schemas.UserPublic),
    (types.UserCreated, schemas.UserCreated),
    (types.Token, schemas.TokenPublic),
    (types.TokenCreated, schemas.TokenCreated),
    (types.Member, schemas_access.MemberPublic),
    (types.Organisation, schemas_access.OrganisationPublic),
    (types.OrganisationDetail, schemas_access.OrganisationDetail),
    (types.Project, schemas_access.ProjectPublic),
    (types.Invitation, schemas_access.InvitationPublic),
    (types.Call, schemas_access.CallPublic),
    (types.Allocation, schemas_access.AllocationPublic),
    (types.Notice, schemas_access.NoticePublic),
    (types.Proposal, schemas_access.ProposalPublic),
    (types.AuditEntry, schemas_access.AuditPublic),
    (types.Job, schemas_jobs.JobPublic),
    (types.UsageRow, schemas_jobs.UsageRow),
    (types.Capacity, schemas_agents.CapacityIn),
    (types.Agent, schemas_agents.AgentPublic),
    (types.AgentToken, schemas_agents.AgentTokenPublic),
    (types.SiteUsername, schemas_agents.SiteUsernamePublic),
]


@pytest.mark.parametrize(("typed", "model"), SCHEMAS, ids=[m.__name__ for _, m in SCHEMAS])
def test_the_sdk_types_name_the_fields_the_api_sends(typed: Any, model: type[BaseModel]) -> None:
    assert set(typed.__required_keys__) == set(model.model_fields)


def test_the_finished_states_are_the_cores() -> None:
    assert {str(s.value) for s in FINISHED} == FINISHED_STATES


def test_the_sdk_imports_neither_the_cli_nor_the_server() -> None:
    code = (
        "import sys, json; from fabbrica import Client; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    loaded = set(json.loads(out))
    assert "fabbrica.client" in loaded
    for name in ("typer", "fastapi", "sqlalchemy", "fabbrica.cli", "fabbrica.api",
                 "fabbrica.services", "fabbrica.store", "fabbrica.agent"):  # fmt: skip
        assert name not in loaded, name


def test_every_public_method_of_the_client_is_in_docs_sdk() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    methods = [m for m in dir(Client) if not m.startswith("_") and callable(getattr(Client, m))]
    assert len(methods) > 50
    missing = [m for m in methods if f"`{m}(" not in text]
    assert missing == []
