"""The `fabbrica` command as a Typer app: every command, grouped; `run` builds it with the
invoked command alone (fabbrica.cli.main, the entry point, comes here unless its quick
`fabbrica run` takes the line). Exit codes: 0 success, 1 failure, 2 bad input or usage."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

from fabbrica.cli.errors import CliError, report

if TYPE_CHECKING:
    from typer._click.core import Command

CATALOG = "Catalog and access"
JOBS = "Jobs"
DATA = "Data and models"
OPERATE = "Operate"
SIMULATE = "Simulate"
ACCOUNT = "Your account"

APP_OPTIONS: dict[str, Any] = {
    "name": "fabbrica",
    "help": "Fabbrica: the one-stop shop of a federation of AI Factories.",
    "no_args_is_help": True,
    "pretty_exceptions_show_locals": False,
    "rich_markup_mode": "markdown",
}


def _version(value: bool) -> None:
    if value:
        from fabbrica import __version__  # the package metadata: read only when asked

        print(f"fabbrica {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Client commands read FABBRICA_URL and FABBRICA_TOKEN, or what `fabbrica login` saved."""


# Commands grouped by what a person does with them; `fabbrica --help` shows the groups.
_GROUPS: dict[str, list[tuple[str, str]]] = {  # name -> "module.attribute" in fabbrica.cli
    ACCOUNT: [
        ("login", "identity_cmds.login"),
        ("logout", "identity_cmds.logout"),
        ("whoami", "identity_cmds.whoami"),
        ("token", "identity_cmds.token_app"),
    ],
    CATALOG: [
        ("catalog", "catalog_cmds.catalog"),
        ("factory", "catalog_cmds.factory"),
        ("sectors", "catalog_cmds.sectors"),
        ("org", "access_cmds.org_app"),
        ("project", "access_cmds.project_app"),
        ("calls", "access_cmds.calls"),
        ("apply", "proposal_cmds.apply"),
        ("proposals", "proposal_cmds.proposals"),
        ("proposal", "proposal_cmds.proposal"),
        ("withdraw", "proposal_cmds.withdraw"),
        ("review", "proposal_cmds.review"),
        ("allocations", "proposal_cmds.allocations"),
        ("allocation", "proposal_cmds.allocation_app"),
        ("notices", "proposal_cmds.notices"),
    ],
    JOBS: [
        ("run", "job_cmds.run"),
        ("templates", "template_cmds.templates_app"),
        ("jobs", "job_cmds.jobs"),
        ("job", "job_cmds.job"),
        ("logs", "job_cmds.logs"),
        ("cancel", "job_cmds.cancel"),
        ("usage", "job_cmds.usage"),
        ("notebook", "notebook_cmds.notebook_app"),
    ],
    DATA: [
        ("download", "job_cmds.download"),
        ("dataset", "dataset_cmds.dataset_app"),
        ("model", "model_cmds.model_app"),
    ],
    OPERATE: [
        ("up", "up_cmd.up"),
        ("serve", "plane_cmds.serve"),
        ("controller", "plane_cmds.controller"),
        ("db", "up_cmd.db_app"),
        ("user", "identity_cmds.user_app"),
        ("call", "access_cmds.call_app"),
        ("assign", "proposal_cmds.assign"),
        ("decide", "proposal_cmds.decide"),
        ("report", "proposal_cmds.report_app"),
        ("agent", "agent_cmds.agent_app"),
    ],
    SIMULATE: [("simulate", "sim_cmds.simulate"), ("plan", "plan_cmd.plan")],
}


def _register(target_app: typer.Typer, only: str | None = None) -> typer.Typer:
    """Add the commands to `target_app`: every one, or only `only` (then only its module
    is imported, not every command's: `fabbrica run` starts sooner)."""
    for panel, entries in _GROUPS.items():
        for name, where in entries:
            if only is not None and name != only:
                continue
            module, attribute = where.split(".")
            target = getattr(importlib.import_module(f"fabbrica.cli.{module}"), attribute)
            if isinstance(target, typer.Typer):
                target_app.add_typer(target, name=name, rich_help_panel=panel)
            else:
                target_app.command(name, rich_help_panel=panel)(target)
    return target_app


def _new_app() -> typer.Typer:
    made = typer.Typer(**APP_OPTIONS)
    made.callback()(_root)
    return made


_FULL: list[typer.Typer] = []


def __getattr__(name: str) -> Any:
    """`app`: the Typer app with every command (imported on first use)."""
    if name == "app":
        if not _FULL:
            _FULL.append(_register(_new_app()))
        return _FULL[0]
    raise AttributeError(name)


def command(only: str | None = None) -> Command:
    """The `fabbrica` command as Click runs it (help with plain placeholders); with `only`,
    with that one command alone (the other commands' modules are not imported)."""
    from fabbrica.cli.helptext import plain_placeholders

    full = __getattr__("app") if only is None else _register(_new_app(), only)
    return plain_placeholders(typer.main.get_command(full))


def _invoked(args: list[str]) -> str | None:
    """The command named first on the line, when it is one of ours (None: the root's help,
    `--version`, or a mistake Click reports with every command listed)."""
    names = {name for entries in _GROUPS.values() for name, _ in entries}
    return args[0] if args and args[0] in names else None


def run(args: list[str]) -> None:
    """Run the command line `args` (without the program's name) and exit."""
    from fabbrica.cli.sim_input import optional_values

    try:
        command(_invoked(args))(args=optional_values(args))
    except Exception as exc:
        if not isinstance(exc, CliError):
            from fabbrica.client import ClientError

            if not isinstance(exc, ClientError):
                raise
        from fabbrica.cli.client import cli_error

        report(exc if isinstance(exc, CliError) else cli_error(exc))  # the SDK's, translated
