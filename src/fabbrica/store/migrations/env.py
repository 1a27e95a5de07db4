"""Alembic environment: the engine comes from fabbrica.store.migrate, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from fabbrica.store.db import normalise_url
from fabbrica.store.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no engine and no sqlalchemy.url given to the migrations")
    return create_engine(normalise_url(url))


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
