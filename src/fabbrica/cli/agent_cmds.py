"""`fabbrica agent`: run a factory's site agent; tokens, usernames and checks for it."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.identity_cmds import show_secret_once
from fabbrica.cli.output import emit, print_table, say, when
from fabbrica.cli.params import JsonOpt
from fabbrica.client import resolve_target

BACKENDS = ("slurm", "local")
FactoryOpt = Annotated[
    str, typer.Option("--factory", metavar="FACTORY", help="The factory id in the catalog.")
]

agent_app = typer.Typer(invoke_without_command=True)  # help: the callback's docstring


@agent_app.callback()
def agent(
    ctx: typer.Context,
    factory: Annotated[
        str | None,
        typer.Option("--factory", metavar="FACTORY", help="The factory this agent runs."),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", metavar="slurm|local", help="slurm or local.")
    ] = "slurm",
    slurm_conf: Annotated[
        Path | None,
        typer.Option("--slurm-conf", metavar="FILE", help="The cluster's slurm.conf (SLURM_CONF)."),
    ] = None,
    partition_map: Annotated[
        Path | None,
        typer.Option(
            "--partition-map",
            metavar="FILE",
            help="JSON or YAML: catalog partition id -> Slurm partition and GRES type.",
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir", metavar="DIR", help="Where job scripts, workdirs and logs are kept."
        ),
    ] = None,
    gpus: Annotated[
        int, typer.Option("--gpus", help="GPUs of the local backend.", min=1, max=1024)
    ] = 2,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between syncs.", min=0.1, max=600)
    ] = 1.0,
    accounts_every: Annotated[
        int,
        typer.Option(
            "--accounts-every",
            help="Bring Slurm accounts and limits in line every N syncs (0: never).",
            min=0,
        ),
    ] = 10,
    data_cache_gib: Annotated[
        float,
        typer.Option(
            "--data-cache-gib",
            help="GiB of data set files kept between jobs (least recently used out first).",
            min=0,
            max=1024 * 1024,
        ),
    ] = 50.0,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", metavar="FILE", help="Your catalog file.")
    ] = None,
    notebook_network: Annotated[
        list[str] | None,
        typer.Option(
            "--notebook-network",
            metavar="CIDR",
            help="The compute nodes' network, where notebooks may listen (default: loopback).",
        ),
    ] = None,
) -> None:
    """Run a factory's site agent until stopped; `check`, `token`, `username`, `list` manage
    agents.

    Runs the site agent of one factory until SIGINT/SIGTERM, with the factory token in
    `FABBRICA_TOKEN` and the API in `FABBRICA_URL`. Every `--interval` seconds (default 1) it
    sends one sync (capacity per partition, the state of every run it holds), cancels and
    launches what the answer says, and uploads new log output; the API holds a sync until
    there is work for the factory or the interval ends, so a job placed there starts at
    once. With `--backend slurm` it also brings Slurm's accounts and limits in line every
    `--accounts-every` syncs (default 10) and before every launch. `--partition-map` (JSON
    or YAML) maps catalog partition ids to Slurm partitions and GRES types:
    `{"partitions": {"booster": {"slurm_partition": "gpu", "gres_type": "gh200"}}}`;
    without it, each catalog partition is the Slurm partition of the same name. Notebooks'
    traffic goes through a WebSocket the agent opens to the API (no port opens at the
    site); a notebook listening on a compute node's address is reached only when that
    address is in a `--notebook-network`. `--backend
    local` runs jobs on this machine (`--gpus` emulated GPUs). When the API is away it keeps
    its runs running and retries with backoff (up to 30 s). Exit 2 for an unknown factory, a
    bad map or a missing token.
    """
    if ctx.invoked_subcommand is not None:
        return
    if factory is None:
        raise CliError("--factory is required (the catalog id of this agent's factory)", BAD_INPUT)
    if backend not in BACKENDS:
        raise CliError(f"--backend: {backend!r}; choose from {', '.join(BACKENDS)}", BAD_INPUT)
    from fabbrica.agent.client import AgentClient
    from fabbrica.agent.loop import Agent
    from fabbrica.agent.tunnel import NotebookTunnel

    target = resolve_target()
    if not target.token:
        raise CliError(
            "no agent token: set FABBRICA_TOKEN (from `fabbrica agent token`)", BAD_INPUT
        )
    root = (work_dir or Path.home() / ".fabbrica-agent" / factory).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(
            f"--work-dir: cannot create {root}: {exc.strerror or exc}", BAD_INPUT
        ) from exc
    networks = _networks(notebook_network or [])
    executor, accounts = _backend(backend, factory, catalog, slurm_conf, partition_map, root, gpus)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = AgentClient(target.url, target.token)
    loop = Agent(
        api,
        executor,
        backend=backend,
        interval=interval,
        work_dir=root,
        sync_accounts=accounts(api).apply if accounts and accounts_every else None,
        accounts_every=accounts_every,
        data_cache_bytes=int(data_cache_gib * 1024**3),
    )
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        # a sync the API holds ends now (its connection closed), not when its wait does
        threading.Thread(target=api.close, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    tunnel = NotebookTunnel(target.url, target.token, loop, networks=networks)
    tunnel.start()  # the notebooks' traffic, over a connection the agent opens
    say(
        f"agent of {factory} ({backend}) syncing with {target.url} every {interval:g} s; "
        f"work dir {root}",
        err=True,
    )
    try:
        loop.run(stop)
    finally:
        tunnel.stop()
        api.close()


def _networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as exc:
        raise CliError(f"--notebook-network: {exc}", BAD_INPUT) from exc


def _backend(
    backend: str,
    factory: str,
    catalog_file: Path | None,
    slurm_conf: Path | None,
    partition_map: Path | None,
    root: Path,
    gpus: int,
) -> tuple[Any, Any]:
    """The executor, and a factory of the account sync (None: no accounts to keep)."""
    from fabbrica.catalog.loader import CatalogError, load_catalog

    try:
        catalog = load_catalog(catalog_file)
    except CatalogError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    entry = catalog.factory(factory)
    if entry is None:
        raise CliError(f"--factory: no factory {factory!r} in the catalog", BAD_INPUT)
    partitions = entry.operating_partitions()
    if not partitions:
        raise CliError(f"{factory} has no operating GPU partition in the catalog", BAD_INPUT)
    if backend == "local":
        from fabbrica.backends.local import LocalExecutor

        first = partitions[0]
        local = LocalExecutor(
            root / "jobs", gpus=gpus, gpu_model=first.gpu_model, partition=first.id,
            name=f"agent {factory}",
        )  # fmt: skip
        return local, None
    from fabbrica.backends.slurm.accounts import AccountSync
    from fabbrica.backends.slurm.executor import MapError, SlurmExecutor

    try:
        slurm = SlurmExecutor.configure(
            slurm_conf=slurm_conf, partition_map=partition_map, partitions=partitions, root=root
        )
    except MapError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    return slurm, lambda api: AccountSync(slurm.runner, api, root / "accounts.json")


@agent_app.command("check")
def check(
    factory: FactoryOpt,
    slurm_conf: Annotated[
        Path | None, typer.Option("--slurm-conf", metavar="FILE", help="The cluster's slurm.conf.")
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option("--work-dir", metavar="DIR", help="The agent's work dir (its accounts)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show how Slurm's accounts and limits differ from the allocations (changes nothing).

    Compares Slurm's accounts, users and `GrpTRESMins` with the factory's allocations
    (`--json`: `changes[]` with `account`, `action`, `detail`, `command`; `in_sync`). Exit 0
    when they match, 1 when they differ.
    """
    from fabbrica.agent.client import AgentClient
    from fabbrica.backends.slurm.accounts import AccountSync
    from fabbrica.backends.slurm.runner import SlurmError, SlurmRunner
    from fabbrica.core.agent_api import ApiRefused, ApiUnavailable

    target = resolve_target()
    if not target.token:
        raise CliError("no agent token: set FABBRICA_TOKEN", BAD_INPUT)
    api = AgentClient(target.url, target.token)
    try:
        root = (work_dir or Path.home() / ".fabbrica-agent" / factory).resolve()
        runner = SlurmRunner(str(slurm_conf) if slurm_conf else None)
        changes = AccountSync(runner, api, root / "accounts.json").plan()
    except (ApiRefused, ApiUnavailable, SlurmError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        api.close()
    rows = [c.as_dict() for c in changes]
    emit({"factory": factory, "in_sync": not rows, "changes": rows}, json_out, _check_table)
    if rows:
        raise typer.Exit(1)


def _check_table(data: dict[str, Any]) -> None:
    rows, factory = data["changes"], data["factory"]
    if not rows:
        say(f"Slurm's accounts match Fabbrica's allocations at {factory}.")
        return
    print_table(
        f"{len(rows)} differences at {factory} (Fabbrica -> Slurm)",
        [
            ("account", lambda r: r["account"]),
            ("change", lambda r: r["action"]),
            ("detail", lambda r: r["detail"]),
        ],
        rows,
    )


@agent_app.command("token")
def token(factory: FactoryOpt, json_out: JsonOpt = False) -> None:
    """Create a token for the factory's agent (admin or operator); shown once."""
    data = client().create_agent_token(factory)
    emit(data, json_out, show_secret_once)


@agent_app.command("username")
def username(
    factory: FactoryOpt,
    email: Annotated[str, typer.Option("--email", metavar="EMAIL", help="The Fabbrica user.")],
    site_username: Annotated[
        str, typer.Option("--username", metavar="USERNAME", help="Their username there.")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Map a user to their username at a factory: their jobs run as it there."""
    data = client().set_site_username(factory, email=email, username=site_username)
    emit(data, json_out)


@agent_app.command("list")
def list_agents(json_out: JsonOpt = False) -> None:
    """Every factory's agent: backend, last sync and the capacity it reported."""
    rows = client().agents()
    emit(rows, json_out, _agent_table)


def _agent_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        "Site agents",
        [
            ("factory", lambda r: r["factory"]),
            ("backend", lambda r: r["backend"] or ""),
            ("last sync", lambda r: when(r["last_seen_at"])),
            (
                "GPUs free/total",
                lambda r: ", ".join(
                    f"{c['partition']}: {c['free_gpus']}/{c['total_gpus']} {c['gpu_model']}"
                    for c in r["capacity"]
                ),
            ),
        ],
        rows,
    )
