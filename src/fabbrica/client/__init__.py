"""The Fabbrica Python SDK: `fabbrica.Client` and its errors (see docs/sdk.md).

Everything public is re-exported here; the modules behind it (`_client`, `_jobs`, ...)
are private and may change.
"""

from __future__ import annotations

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
from fabbrica.client._jobs import (
    FINISHED_STATES,
    SKIPPED_FOLDERS,
    LogChunk,
    Outputs,
    UploadProgress,
    pack_workdir,
)

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
