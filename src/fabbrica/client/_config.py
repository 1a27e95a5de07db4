"""Where the API is and which token to use: arguments, then FABBRICA_URL / FABBRICA_TOKEN,
then the config file that `fabbrica login` writes, then the local default URL."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fabbrica.client._errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "Target",
    "config_path",
    "read_config",
    "resolve_target",
    "write_config",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0  # seconds a single request may take


def config_path() -> Path:
    """FABBRICA_CONFIG, else `$XDG_CONFIG_HOME/fabbrica/config.json` (`~/.config/...`)."""
    explicit = os.environ.get("FABBRICA_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fabbrica" / "config.json"


def read_config() -> dict[str, str]:
    """The `url` and `token` saved in the config file; `{}` when there is no file.

    Raises ConfigError when the file cannot be read or is not a JSON object."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} does not hold a JSON object")
    return {k: str(v) for k, v in data.items() if k in {"url", "token", "token_id"}}


def write_config(url: str, token: str | None, token_id: int | None = None) -> Path:
    """Save a URL and token in the config file, readable by its owner only (0600); the
    token's id when `fabbrica login` made it (so that `fabbrica logout` revokes it); no
    token: only the URL."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = {"url": url}
    if token is not None:
        data["token"] = token
    if token_id is not None:
        data["token_id"] = token_id
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Target:
    """An API base URL (no trailing slash, no /api/v1) and a token (None: none found)."""

    url: str
    token: str | None


def resolve_target(url: str | None = None, token: str | None = None) -> Target:
    """The URL and token to use: the arguments win, then FABBRICA_URL / FABBRICA_TOKEN, then
    the config file, then DEFAULT_URL (and no token). The file is read only when needed."""
    url = url or os.environ.get("FABBRICA_URL")
    token = token or os.environ.get("FABBRICA_TOKEN")
    if not url or not token:
        config = read_config()
        url = url or config.get("url")
        token = token or config.get("token")
    return Target((url or DEFAULT_URL).rstrip("/"), token)
