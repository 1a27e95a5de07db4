"""`fabbrica user`, `fabbrica token`, `fabbrica login`, `fabbrica whoami`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import (
    count,
    err_console,
    print_json,
    print_record,
    print_table,
    when,
)
from fabbrica.client import Client, resolve_target, write_config
from fabbrica.core.identity import Role

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

user_app = typer.Typer(help="Manage users (federation admins).", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def _show_secret_once(data: Mapping[str, Any]) -> None:
    err_console.print("[yellow]The token is shown only now; Fabbrica keeps only its hash.[/yellow]")
    print_record(data)


@user_app.command("add")
def user_add(
    email: str,
    name: Annotated[str, typer.Option("--name", help="Full name.")],
    role: Annotated[Role, typer.Option("--role", help="The user's role.")] = Role.USER,
    json_out: JsonOpt = False,
) -> None:
    """Create a user; prints the user with a one-time `token`."""
    data = client().create_user(email, name, role.value)
    if json_out:
        print_json(data)
    else:
        _show_secret_once(data)


@user_app.command("list")
def user_list(json_out: JsonOpt = False) -> None:
    """List users."""
    rows = client().users()
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "user"),
        [
            ("id", lambda r: r["id"]),
            ("email", lambda r: r["email"]),
            ("name", lambda r: r["name"]),
            ("role", lambda r: r["role"]),
            ("active", lambda r: "yes" if r["active"] else "no"),
        ],
        rows,
    )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "cli",
    user: Annotated[
        int | None, typer.Option("--user", help="Admins: the id of the user to create it for.")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, max=3650, help="Expiry.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an API token; prints it once."""
    data = client().create_token(name, user_id=user, expires_in_days=expires_in_days)
    if json_out:
        print_json(data)
    else:
        _show_secret_once(data)


@token_app.command("list")
def token_list(
    user: Annotated[
        int | None, typer.Option("--user", help="Admins: another user's id, or 0 for all.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List your tokens (never their secrets)."""
    rows = client().tokens(user)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "token"),
        [
            ("id", lambda r: r["id"]),
            ("user", lambda r: r["user_id"]),
            ("name", lambda r: r["name"]),
            ("starts", lambda r: r["hint"]),
            ("created", lambda r: when(r["created_at"])),
            ("last used", lambda r: when(r["last_used_at"])),
            ("expires", lambda r: when(r["expires_at"])),
            ("revoked", lambda r: when(r["revoked_at"])),
        ],
        rows,
    )


@token_app.command("revoke")
def token_revoke(token_id: int, json_out: JsonOpt = False) -> None:
    """Revoke a token at once."""
    data = client().revoke_token(token_id)
    if json_out:
        print_json(data)
    else:
        print_record(data)


def login(
    url: Annotated[str | None, typer.Option("--url", help="The Fabbrica API's base URL.")] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An API token (asked for when not given).")
    ] = None,
) -> None:
    """Check a URL and token against the API and save them in the config file."""
    current = resolve_target()
    url = (url or current.url).rstrip("/")
    if token is None:
        if not typer.get_text_stream("stdin").isatty():
            raise CliError("no --token given and no terminal to ask for one", BAD_INPUT)
        token = typer.prompt("API token", hide_input=True)
    with Client(url, token) as api:
        me = api.me()
    path = write_config(url, token)
    err_console.print(f"Logged in to {url} as {me['email']} ({me['role']}); saved to {path}")


def whoami(json_out: JsonOpt = False) -> None:
    """Show the user your token belongs to."""
    data = client().me()
    if json_out:
        print_json(data)
    else:
        print_record(data)
