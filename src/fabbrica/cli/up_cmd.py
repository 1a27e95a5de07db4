"""`fabbrica up`: the embedded default in one process; `fabbrica db upgrade`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import log_to_stderr, say

if TYPE_CHECKING:
    from fabbrica.server import Prepared
    from fabbrica.settings import Settings

db_app = typer.Typer(help="Database schema (operators on PostgreSQL).", no_args_is_help=True)


def _settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from fabbrica.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CliError(f"bad setting {field}: {err['msg']}", BAD_INPUT) from exc


@contextmanager
def storage_errors() -> Iterator[None]:
    """The data directory or the database unusable: a message, not a traceback."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        yield
    except ArgumentError as exc:
        raise CliError(f"FABBRICA_DATABASE_URL: {exc}", BAD_INPUT) from exc
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise CliError(f"cannot use the database: {' '.join(str(cause).split())}") from exc
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise CliError(f"cannot use the data directory{where}: {exc.strerror or exc}") from exc


def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", min=1, max=65535)] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", metavar="DIR", help="Where the embedded SQLite database lives."),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", metavar="FILE", help="Your own catalog file (YAML).")
    ] = None,
    emulate_federation: Annotated[
        bool | None,
        typer.Option(
            "--emulate-federation",
            help="Stand in for every catalog factory with a small emulated executor here.",
        ),
    ] = None,
) -> None:
    """Run the API and the control loop in one process (SQLite unless FABBRICA_DATABASE_URL).

    Runs the API and the control loop in one process: the embedded default, on SQLite in the
    data directory (or on `FABBRICA_DATABASE_URL`). On start it validates the catalog (a bad
    file: exit 2, nothing written), creates the data directory, migrates the schema, and on an
    empty database creates the federation admin (`admin@localhost`) with
    `FABBRICA_BOOTSTRAP_TOKEN` as its token, or prints a generated token once. API docs are at
    `/docs`, the OpenAPI document at `/openapi.json`.

    It also adds the `local` factory (this machine, `FABBRICA_LOCAL_GPUS` emulated GPUs, its own
    open calls) and runs its jobs, as process groups in their own job directories, with the
    Python that runs Fabbrica first on their `PATH`. `--emulate-federation` stands in for
    every catalog factory with operating GPUs too (up to 4 emulated GPUs each, marked
    `emulated`), so that placement across factories can be tried on one machine.
    """
    import uvicorn

    from fabbrica.catalog.loader import CatalogError
    from fabbrica.server import (
        KEEP_ALIVE_SECONDS,
        build_app,
        describe_database,
        load_settings_catalog,
        prepare,
    )

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        catalog=catalog,
        emulate_federation=emulate_federation,
    )
    try:
        loaded = load_settings_catalog(settings)  # before anything is written
    except CatalogError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    with storage_errors():
        prepared = prepare(settings, loaded)
    url = f"http://{settings.host}:{settings.port}"
    say(f"Fabbrica on {url}  (API docs: {url}/docs)", err=True)
    say(f"  database: {describe_database(prepared.ctx.db.url)}", err=True)
    say(
        f"  catalog:  {settings.catalog or 'shipped EuroHPC catalog'}"
        f" ({len(loaded.factories)} factories)",
        err=True,
    )
    if settings.emulate_federation:
        emulated = sorted(f for f in prepared.ctx.executors if f != "local")
        say(f"  emulated factories (jobs run here): {', '.join(emulated)}", err=True)
    for line in isolation_lines(prepared):
        say(line, err=True)
    admin_banner(prepared, settings.public_url)
    if prepared.bootstrap_token:
        say(f"  export FABBRICA_URL={url} FABBRICA_TOKEN=<the token above>", err=True)
    log_to_stderr(settings.log_level)
    uvicorn.run(
        build_app(prepared),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def isolation_lines(prepared: Prepared) -> list[str]:
    """What `fabbrica up` says about how local jobs are kept apart (docs/local-isolation.md)."""
    single = prepared.ctx.single_user
    if single.factories:
        holder = (
            f"FABBRICA_LOCAL_USER={single.user_email}"
            if single.user_email
            else "the PI of the project with the oldest live allocation there;"
            " FABBRICA_LOCAL_USER=<email> names another"
        )
        names = sorted(single.factories)
        which = (
            f"the factory {names[0]} runs"
            if len(names) == 1
            else f"the factories {', '.join(names)} run"
        )
        return [
            f"  local jobs: NOT isolated: {prepared.not_isolated}. A job could read the "
            f"database and every other job's files, so {which} the jobs of one user only "
            f"({holder}). Run fabbrica up as root to run each user's jobs as a system user "
            "of their own (docs/local-isolation.md)."
        ]
    if not prepared.local_factories:
        return []  # nothing runs here
    lines = ["  local jobs: isolated, each user's as system user fab-u<user id>"]
    lines.extend(f"  warning: {problem}" for problem in prepared.warnings)
    return lines


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to `FABBRICA_DATABASE_URL` (or the embedded database).

    Prints the revision. For operators who migrate before rolling out API processes.
    """
    from fabbrica.server import describe_database
    from fabbrica.store.db import Database
    from fabbrica.store.migrate import current_revision, upgrade

    settings = _settings()
    with storage_errors():
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url())
    try:
        with storage_errors():
            upgrade(db.engine)
            revision = current_revision(db.engine)
        say(f"{describe_database(db.url)} is at revision {revision}", err=True)
    finally:
        db.dispose()


def admin_banner(prepared: Prepared, public_url: str | None) -> None:
    """What the process that made the first admin prints once: the portal URL that signs
    the admin in (once) and the admin's API token."""
    if prepared.admin_link:
        base = public_url or f"http://{prepared.settings.host}:{prepared.settings.port}"
        say("Sign in to the portal as the federation admin (this link works once):", err=True)
        say(f"  {base.rstrip('/')}/sign-in/{prepared.admin_link}", style="bold", err=True)
    if prepared.bootstrap_token:
        say("Created the federation admin. Its token, shown once:", style="yellow", err=True)
        say(prepared.bootstrap_token)
