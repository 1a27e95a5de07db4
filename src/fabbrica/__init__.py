"""Fabbrica: the operating layer of a federation of AI Factories.

`from fabbrica import Client` is the Python SDK (docs/sdk.md). The SDK is imported on
first use of one of its names (PEP 562): `import fabbrica.cli.main` (every CLI process, the
server's too) does not pay for httpx and the SDK's models unless it needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("fabbrica")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        import fabbrica.client

        return getattr(fabbrica.client, name)
    raise AttributeError(f"module 'fabbrica' has no attribute {name!r}")
