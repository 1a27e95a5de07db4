"""Talking to a Fabbrica API: where it is (FABBRICA_URL, the config file) and how."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError

DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses that mean "your request was wrong" (exit 2) rather than "it failed" (exit 1).
BAD_INPUT_STATUSES = {400, 404, 409, 413, 415, 422}


def config_path() -> Path:
    explicit = os.environ.get("FABBRICA_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fabbrica" / "config.json"


def read_config() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"the config file {path} does not hold a JSON object")
    return {k: str(v) for k, v in data.items() if k in {"url", "token"}}


def write_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"url": url, "token": token}, handle, indent=2)
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None


def resolve_target() -> Target:
    """FABBRICA_URL / FABBRICA_TOKEN win over the config file written by `fabbrica login`."""
    config = read_config()
    url = os.environ.get("FABBRICA_URL") or config.get("url") or DEFAULT_URL
    token = os.environ.get("FABBRICA_TOKEN") or config.get("token")
    return Target(url.rstrip("/"), token)


class Client:
    """A thin, error-translating wrapper over httpx for /api/v1."""

    def __init__(self, target: Target, *, timeout: float = 30.0) -> None:
        self.target = target
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._http = httpx.Client(base_url=f"{target.url}/api/v1", headers=headers, timeout=timeout)

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response as it is (for logs and downloads); errors are the caller's."""
        if not self.target.token and path != "/health":
            raise CliError("no API token: set FABBRICA_TOKEN or run `fabbrica login`", BAD_INPUT)
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach Fabbrica at {self.target.url} ({exc}); is `fabbrica up` "
                "running there? Set FABBRICA_URL or run `fabbrica login --url`."
            ) from exc

    def check(self, response: httpx.Response) -> None:
        if not response.is_success:
            raise _error_from(response)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.raw(method, path, **kwargs)
        self.check(response)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json={k: v for k, v in body.items() if v is not None})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _error_from(response: httpx.Response) -> CliError:
    try:
        error = response.json()["error"]
        message = str(error["message"])
        field = error.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = response.text[:500] or response.reason_phrase, None
    if field and not message.startswith(f"{field}:"):
        message = f"{field}: {message}"
    code = BAD_INPUT if response.status_code in BAD_INPUT_STATUSES else FAILURE
    return CliError(f"{message} (HTTP {response.status_code})", code)


def client() -> Client:
    return Client(resolve_target())
