"""Fabbrica: the operating layer of a federation of AI Factories.

`from fabbrica import Client` is the Python SDK (docs/sdk.md).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fabbrica")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

# The SDK comes after __version__ so that modules it imports may read it.
from fabbrica.client import (
    ApiError,
    Client,
    ClientError,
    ConfigError,
    ConnectError,
    JobSpecError,
    NoTokenError,
    OutputsError,
)

__all__ = [
    "ApiError",
    "Client",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "JobSpecError",
    "NoTokenError",
    "OutputsError",
    "__version__",
]
