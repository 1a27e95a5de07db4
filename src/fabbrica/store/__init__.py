"""Persistence: SQLAlchemy 2 models, engines and Alembic migrations."""

from fabbrica.store.db import Database
from fabbrica.store.migrate import upgrade

__all__ = ["Database", "upgrade"]
