"""`fabbrica serve` and `fabbrica controller`: the API and the control loop as processes of
their own, on PostgreSQL (docs/deploy.md). `fabbrica up` runs both in one process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import log_to_stderr, say
from fabbrica.cli.up_cmd import _settings, admin_banner, storage_errors

if TYPE_CHECKING:
    from fabbrica.catalog.model import Catalog
    from fabbrica.server import Prepared
    from fabbrica.settings import Settings

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Uploads and the local factory's job files (shared by serve and controller).",
    ),
]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", metavar="FILE", help="Your own catalog file (YAML).")
]


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", min=1, max=65535)] = None,
    data_dir: DataDirOpt = None,
    catalog: CatalogOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes of this replica (one per core it may use), on one port.",
        ),
    ] = 1,
) -> None:
    """Run the API only, on PostgreSQL: any number of replicas, no control loop.

    Serves the API (and its docs at `/docs`) on `FABBRICA_DATABASE_URL`, which must be
    PostgreSQL (exit 2 otherwise: on SQLite, `fabbrica up` runs the API and the control loop
    in one process). A replica holds no state of its own: run as many as you like behind a
    reverse proxy, with the same catalog and settings, and `fabbrica controller` beside
    them. On start it migrates the schema and creates the first admin on an empty database,
    one process at a time. With `--workers N` the replica runs N processes on its port
    (uvicorn's workers), each its own API. While the database is unreachable it answers
    503 (`unavailable`, with `Retry-After`) and it recovers by itself when the database
    returns. See docs/deploy.md.
    """
    import uvicorn

    from fabbrica.server import API, KEEP_ALIVE_SECONDS, build_api, describe_database

    settings = _plane_settings("serve", host=host, port=port, data_dir=data_dir, catalog=catalog)
    prepared = _prepare(settings, API)
    url = f"http://{settings.host}:{settings.port}"
    say(f"Fabbrica API on {url}  (API docs: {url}/docs)", err=True)
    say(f"  database: {describe_database(prepared.ctx.db.url)}", err=True)
    say("  control loop: not here (fabbrica controller)", err=True)
    admin_banner(prepared, settings.public_url or None)
    host, port, level = settings.host, settings.port, settings.log_level
    log_to_stderr(level)
    if workers == 1:
        uvicorn.run(build_api(prepared), host=host, port=port, log_level=level,
                    timeout_keep_alive=KEEP_ALIVE_SECONDS)  # fmt: skip
        return
    # each worker builds its API from the environment (fabbrica.server.worker_api): the
    # settings this process resolved, options included
    prepared.ctx.db.dispose()
    os.environ.update(
        FABBRICA_DATA_DIR=str(settings.data_dir),
        FABBRICA_HOST=settings.host,
        FABBRICA_PORT=str(settings.port),
    )
    if settings.catalog is not None:
        os.environ["FABBRICA_CATALOG"] = str(settings.catalog)
    app = "fabbrica.server:worker_api"
    uvicorn.run(app, factory=True, workers=workers, host=host, port=port, log_level=level,
                timeout_keep_alive=KEEP_ALIVE_SECONDS)  # fmt: skip


def controller(data_dir: DataDirOpt = None, catalog: CatalogOpt = None) -> None:
    """Run the control loop, on PostgreSQL: one leads, the others stand by.

    Runs the control loop (jobs, allocation expiry, email) and the agent of the `local`
    factory when `FABBRICA_LOCAL_GPUS` is above 0, on `FABBRICA_DATABASE_URL`, which must be
    PostgreSQL (exit 2 otherwise). Any number may run: the one that holds a PostgreSQL
    advisory lock leads, on a connection it keeps for as long as it leads; the others try
    the lock every `FABBRICA_LOOP_INTERVAL_SECONDS` and one takes over within seconds of the
    leader's death. A leader whose connection drops stops acting at once and tries again
    like the others, so it resumes by itself after a database restart. Runs until
    SIGINT/SIGTERM. See docs/deploy.md.
    """
    from fabbrica.server import CONTROLLER, Controller, describe_database

    settings = _plane_settings("controller", data_dir=data_dir, catalog=catalog)
    prepared = _prepare(settings, CONTROLLER)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    say(f"Fabbrica controller on {describe_database(prepared.ctx.db.url)}", err=True)
    admin_banner(prepared, settings.public_url or None)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Controller(prepared).run(stop)


def _plane_settings(command: str, **overrides: object) -> Settings:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    settings = _settings(**overrides)
    url = settings.database_url
    try:
        backend = make_url(url).get_backend_name() if url else "sqlite"
    except ArgumentError as exc:
        raise CliError(f"FABBRICA_DATABASE_URL: {exc}", BAD_INPUT) from exc
    if backend != "postgresql":
        raise CliError(
            f"fabbrica {command} needs PostgreSQL: set FABBRICA_DATABASE_URL=postgresql://... "
            "(API replicas and controllers share one database; on SQLite, `fabbrica up` runs "
            "the API and the control loop in one process)",
            BAD_INPUT,
        )
    return settings


def _prepare(settings: Settings, role: str) -> Prepared:
    from fabbrica.catalog.loader import CatalogError
    from fabbrica.server import load_settings_catalog, prepare

    try:
        loaded: Catalog = load_settings_catalog(settings)  # before anything is written
    except CatalogError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    with storage_errors():
        return prepare(settings, loaded, role)
