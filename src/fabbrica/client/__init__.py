"""The Fabbrica Python SDK: `fabbrica.Client` and its errors (see docs/sdk.md).

Everything public is re-exported here; the modules behind it (`_client`, `_jobs`, ...)
are private and may change. Each name is imported on first use (PEP 562): the CLI's quick
`fabbrica run` imports `_config`, `_errors` and `_upload` (the standard library only)
without httpx and the rest of the SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabbrica.client import types
    from fabbrica.client._client import Client
    from fabbrica.client._config import (
        DEFAULT_URL,
        Target,
        config_path,
        read_config,
        resolve_target,
        write_config,
    )
    from fabbrica.client._datasets import DatasetProgress, PackedDataset, pack_dataset
    from fabbrica.client._errors import (
        ApiError,
        ClientError,
        ConfigError,
        ConnectError,
        JobSpecError,
        NoTokenError,
        OutputsError,
    )
    from fabbrica.client._http import DEFAULT_TIMEOUT
    from fabbrica.client._jobs import FINISHED_STATES, LogChunk, Outputs, UploadProgress
    from fabbrica.client._upload import SKIPPED_FOLDERS, pack_workdir

_ERRORS = ["ApiError", "ClientError", "ConfigError", "ConnectError", "JobSpecError"]
_ERRORS += ["NoTokenError", "OutputsError"]
# name -> the module that defines it
_WHERE = {
    "types": "fabbrica.client.types",
    "Client": "fabbrica.client._client",
    **dict.fromkeys(
        ["DEFAULT_URL", "Target", "config_path", "read_config", "resolve_target", "write_config"],
        "fabbrica.client._config",
    ),
    **dict.fromkeys(
        ["DatasetProgress", "PackedDataset", "pack_dataset"], "fabbrica.client._datasets"
    ),
    **dict.fromkeys(_ERRORS, "fabbrica.client._errors"),
    "DEFAULT_TIMEOUT": "fabbrica.client._http",
    **dict.fromkeys(
        ["FINISHED_STATES", "LogChunk", "Outputs", "UploadProgress"], "fabbrica.client._jobs"
    ),
    **dict.fromkeys(["SKIPPED_FOLDERS", "pack_workdir"], "fabbrica.client._upload"),
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "FINISHED_STATES",
    "SKIPPED_FOLDERS",
    "ApiError",
    "Client",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "DatasetProgress",
    "JobSpecError",
    "LogChunk",
    "NoTokenError",
    "Outputs",
    "OutputsError",
    "PackedDataset",
    "Target",
    "UploadProgress",
    "config_path",
    "pack_dataset",
    "pack_workdir",
    "read_config",
    "resolve_target",
    "types",
    "write_config",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'fabbrica.client' has no attribute {name!r}")
    module = import_module(where)
    found = module if name == "types" else getattr(module, name)
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
