"""The REST API under /api/v1 (FastAPI)."""

from fabbrica.api.app import create_app

__all__ = ["create_app"]
