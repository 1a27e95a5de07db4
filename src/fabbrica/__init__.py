"""Fabbrica: the operating layer of a federation of AI Factories.

`from fabbrica import Client` is the Python SDK (docs/sdk.md). The SDK is imported on
first use of one of its names (PEP 562): `import fabbrica.cli.main` (every CLI process, the
server's too) does not pay for httpx and the SDK's models unless it needs them, nor for the
package metadata behind `__version__`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str
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
    if name == "__version__":  # the package metadata is read on first use (`--version`)
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("fabbrica")
        except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    if name in __all__:
        import fabbrica.client

        return getattr(fabbrica.client, name)
    raise AttributeError(f"module 'fabbrica' has no attribute {name!r}")
