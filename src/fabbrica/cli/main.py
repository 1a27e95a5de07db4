"""The `fabbrica` command. Exit codes: 0 success, 1 failure, 2 bad input or usage."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.text import Text

from fabbrica import __version__
from fabbrica.cli import (
    access_cmds,
    agent_cmds,
    catalog_cmds,
    dataset_cmds,
    identity_cmds,
    job_cmds,
    model_cmds,
    notebook_cmds,
    plan_cmd,
    plane_cmds,
    proposal_cmds,
    sim_cmds,
    template_cmds,
    up_cmd,
)
from fabbrica.cli.client import cli_error
from fabbrica.cli.errors import CliError
from fabbrica.cli.helptext import plain_placeholders
from fabbrica.cli.output import err_console
from fabbrica.cli.sim_input import optional_values
from fabbrica.client import ClientError

if TYPE_CHECKING:
    from typer._click.core import Command

CATALOG = "Catalog and access"
JOBS = "Jobs"
DATA = "Data and models"
OPERATE = "Operate"
SIMULATE = "Simulate"
ACCOUNT = "Your account"

app = typer.Typer(
    name="fabbrica",
    help="Fabbrica: the one-stop shop of a federation of AI Factories.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        print(f"fabbrica {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Client commands read FABBRICA_URL and FABBRICA_TOKEN, or what `fabbrica login` saved."""


# Commands grouped by what a person does with them; `fabbrica --help` shows the groups.
_GROUPS: dict[str, list[tuple[str, Any]]] = {
    ACCOUNT: [
        ("login", identity_cmds.login),
        ("logout", identity_cmds.logout),
        ("whoami", identity_cmds.whoami),
        ("token", identity_cmds.token_app),
    ],
    CATALOG: [
        ("catalog", catalog_cmds.catalog),
        ("factory", catalog_cmds.factory),
        ("sectors", catalog_cmds.sectors),
        ("org", access_cmds.org_app),
        ("project", access_cmds.project_app),
        ("calls", access_cmds.calls),
        ("apply", proposal_cmds.apply),
        ("proposals", proposal_cmds.proposals),
        ("proposal", proposal_cmds.proposal),
        ("withdraw", proposal_cmds.withdraw),
        ("review", proposal_cmds.review),
        ("allocations", proposal_cmds.allocations),
        ("allocation", proposal_cmds.allocation_app),
        ("notices", proposal_cmds.notices),
    ],
    JOBS: [
        ("run", job_cmds.run),
        ("templates", template_cmds.templates_app),
        ("jobs", job_cmds.jobs),
        ("job", job_cmds.job),
        ("logs", job_cmds.logs),
        ("cancel", job_cmds.cancel),
        ("usage", job_cmds.usage),
        ("notebook", notebook_cmds.notebook_app),
    ],
    DATA: [
        ("download", job_cmds.download),
        ("dataset", dataset_cmds.dataset_app),
        ("model", model_cmds.model_app),
    ],
    OPERATE: [
        ("up", up_cmd.up),
        ("serve", plane_cmds.serve),
        ("controller", plane_cmds.controller),
        ("db", up_cmd.db_app),
        ("user", identity_cmds.user_app),
        ("call", access_cmds.call_app),
        ("assign", proposal_cmds.assign),
        ("decide", proposal_cmds.decide),
        ("report", proposal_cmds.report_app),
        ("agent", agent_cmds.agent_app),
    ],
    SIMULATE: [("simulate", sim_cmds.simulate), ("plan", plan_cmd.plan)],
}
for _panel, _entries in _GROUPS.items():
    for _name, _target in _entries:
        if isinstance(_target, typer.Typer):
            app.add_typer(_target, name=_name, rich_help_panel=_panel)
        else:
            app.command(_name, rich_help_panel=_panel)(_target)


def command() -> Command:
    """The `fabbrica` command as Click runs it (help with plain placeholders)."""
    return plain_placeholders(typer.main.get_command(app))


def main() -> None:
    try:
        command()(args=optional_values(sys.argv[1:]))
    except (CliError, ClientError) as exc:
        error = exc if isinstance(exc, CliError) else cli_error(exc)  # the SDK's, translated
        # The message is user text (server errors, names, patterns): printed as written.
        err_console.print(Text.assemble(("error:", "red"), " ", error.message), soft_wrap=True)
        sys.exit(error.exit_code)
