"""The `fabbrica` command. Exit codes: 0 success, 1 failure, 2 bad input or usage."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fabbrica import __version__
from fabbrica.cli import (
    access_cmds,
    agent_cmds,
    catalog_cmds,
    identity_cmds,
    job_cmds,
    proposal_cmds,
    sim_cmds,
    up_cmd,
)
from fabbrica.cli.client import cli_error
from fabbrica.cli.errors import CliError
from fabbrica.cli.output import err_console
from fabbrica.client import ClientError

app = typer.Typer(
    name="fabbrica",
    help="Fabbrica: the one-stop shop of a federation of AI Factories.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
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


app.command()(up_cmd.up)
app.command()(catalog_cmds.catalog)
app.command()(catalog_cmds.factory)
app.command()(catalog_cmds.sectors)
app.command()(identity_cmds.login)
app.command()(identity_cmds.whoami)
app.add_typer(identity_cmds.user_app, name="user")
app.add_typer(identity_cmds.token_app, name="token")
app.add_typer(up_cmd.db_app, name="db")
app.add_typer(access_cmds.org_app, name="org", no_args_is_help=True)
app.add_typer(access_cmds.project_app, name="project", no_args_is_help=True)
app.command()(access_cmds.calls)
app.add_typer(access_cmds.call_app, name="call", no_args_is_help=True)
for _command in (
    proposal_cmds.apply,
    proposal_cmds.proposals,
    proposal_cmds.proposal,
    proposal_cmds.withdraw,
    proposal_cmds.review,
    proposal_cmds.assign,
    proposal_cmds.decide,
    proposal_cmds.allocations,
    job_cmds.run,
    job_cmds.jobs,
    job_cmds.job,
    job_cmds.logs,
    job_cmds.cancel,
    job_cmds.download,
    job_cmds.usage,
    sim_cmds.simulate,
    sim_cmds.plan,
):
    app.command()(_command)
app.add_typer(proposal_cmds.allocation_app, name="allocation", no_args_is_help=True)
app.add_typer(proposal_cmds.report_app, name="report", no_args_is_help=True)
app.add_typer(agent_cmds.agent_app, name="agent")


def main() -> None:
    try:
        app()
    except (CliError, ClientError) as exc:
        error = exc if isinstance(exc, CliError) else cli_error(exc)  # the SDK's, translated
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
