"""`fabbrica user`, `fabbrica token`, `fabbrica login`, `fabbrica whoami`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from fabbrica.cli import device_login
from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import count, emit, print_record, print_table, say, when
from fabbrica.cli.params import JsonOpt
from fabbrica.client import Client, ClientError, read_config, resolve_target, write_config
from fabbrica.core.identity import Role

user_app = typer.Typer(help="Manage users (federation admins).", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def show_secret_once(data: Mapping[str, Any]) -> None:
    say("The token is shown only now; Fabbrica keeps only its hash.", style="yellow", err=True)
    print_record(data)


FactoriesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--factory",
        metavar="FACTORY",
        help="Operators: a factory they operate (catalog id); repeat for several.",
    ),
]


@user_app.command("add")
def user_add(
    email: str,
    name: Annotated[str, typer.Option("--name", help="Full name.")],
    role: Annotated[Role, typer.Option("--role", help="The user's role.")] = Role.USER,
    factories: FactoriesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a user; prints the user with a one-time `token` (admins).

    An operator operates only the factories named with `--factory` (their calls, proposals,
    allocations and agents); federation admins see everything.
    """
    data = client().create_user(email, name, role.value, factories=factories or ())
    emit(data, json_out, show_secret_once)


@user_app.command("factories")
def user_factories(
    user_id: int,
    factories: Annotated[
        list[str] | None, typer.Argument(help="Catalog ids; none: no factory.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Set the factories an operator operates (federation admins); replaces the list."""
    data = client().set_user_factories(user_id, factories or [])
    emit(data, json_out)


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


@user_app.command("suspend")
def user_suspend(user_id: int, reason: ReasonOpt, json_out: JsonOpt = False) -> None:
    """Suspend a user (federation admins): refused at their next request.

    Whatever they hold stops working at once: Fabbrica tokens, portal sessions, an OpenID
    Provider's access tokens. Their projects, jobs and allocations stay. Audited.
    """
    emit(client().suspend_user(user_id, reason), json_out)


@user_app.command("reactivate")
def user_reactivate(user_id: int, reason: ReasonOpt, json_out: JsonOpt = False) -> None:
    """Let a suspended user back in (federation admins); audited."""
    emit(client().reactivate_user(user_id, reason), json_out)


@user_app.command("list")
def user_list(json_out: JsonOpt = False) -> None:
    """List users with their role and, for operators, their factories (admins)."""
    rows = client().users()
    emit(rows, json_out, _user_table)


def _user_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "user"),
        [
            ("id", lambda r: r["id"]),
            ("email", lambda r: r["email"]),
            ("name", lambda r: r["name"]),
            ("role", lambda r: r["role"]),
            ("factories", lambda r: ", ".join(r.get("factories") or ())),
            ("active", lambda r: "yes" if r["active"] else "no"),
        ],
        rows,
    )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "cli",
    user: Annotated[
        int | None,
        typer.Option(
            "--user", metavar="USER_ID", help="Admins: the id of the user to create it for."
        ),
    ] = None,
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", min=1, max=3650, help="Days until it expires."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an API token; prints it once.

    A new API token for yourself (admins: `--user` for someone else), printed once.
    """
    data = client().create_token(name, user_id=user, expires_in_days=expires_in_days)
    emit(data, json_out, show_secret_once)


@token_app.command("list")
def token_list(
    user: Annotated[
        int | None,
        typer.Option("--user", metavar="USER_ID", help="Admins: another user's id, or 0 for all."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List your tokens (never their secrets).

    Your tokens with their hint (first characters), creation, last use, expiry and revocation;
    never the secret. Admins: `--user ID`, or `--user 0` for everyone's.
    """
    rows = client().tokens(user)
    emit(rows, json_out, _token_table)


def _token_table(rows: list[dict[str, Any]]) -> None:
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
    """Revoke a token at once.

    Revokes a token at once; revoking twice is harmless. Another user's token is reported as
    not found.
    """
    data = client().revoke_token(token_id)
    emit(data, json_out)


def login(
    url: Annotated[str | None, typer.Option("--url", help="The Fabbrica API's base URL.")] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An API token (asked for when not given).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="Sign in with this identity provider (its name)."),
    ] = None,
    mfa: Annotated[
        bool,
        typer.Option("--mfa", help="Ask the provider for multi-factor authentication."),
    ] = False,
) -> None:
    """Sign in: with the server's identity provider, or check and save an API token.

    Without `--token`, where the server has an identity provider (MyAccessID, Keycloak, ...),
    prints a URL and a code to open in any browser, waits for the sign-in there, and saves
    a new API token of 30 days (`--mfa`: ask for multi-factor authentication, which
    factories that require it need). With `--token` (or a server without a provider), checks the
    token against the API (`GET /api/v1/me`); without `--token` it asks on the terminal,
    with no terminal it exits 2. URL and token go to the config file (mode 600).
    FABBRICA_TOKEN, when set, still wins over the saved token.
    """
    current = resolve_target()
    url = (url or current.url).rstrip("/")
    token_id: int | None = None
    if token is None:
        offered = device_login.providers(url)
        if offered or provider is not None:
            chosen = device_login.choose(offered, provider)
            made = device_login.sign_in(url, chosen, lambda text: say(text, err=True), mfa=mfa)
            token, token_id = str(made["token"]), int(made["id"])
    if token is None:
        if not typer.get_text_stream("stdin").isatty():
            raise CliError("no --token given and no terminal to ask for one", BAD_INPUT)
        token = typer.prompt("API token", hide_input=True)
    with Client(url, token) as api:
        me = api.me()
    path = write_config(url, token, token_id)
    say(f"Logged in to {url} as {me['email']} ({me['role']}); saved to {path}", err=True)


def logout() -> None:
    """Forget the saved token (and revoke it, when `fabbrica login` made it).

    Keeps the saved URL. FABBRICA_TOKEN, when set, is not touched and still wins.
    """
    saved = read_config()
    url = saved.get("url") or resolve_target().url
    if saved.get("token") and saved.get("token_id"):
        try:
            with Client(url, saved["token"]) as api:
                api.revoke_token(int(saved["token_id"]))
        except ClientError as exc:  # already revoked or expired, or the server is away
            say(f"Could not revoke the token at {url}: {exc}", style="yellow", err=True)
    path = write_config(url, None)
    say(f"Logged out of {url}; the token is gone from {path}", err=True)
    if os.environ.get("FABBRICA_TOKEN"):
        say("FABBRICA_TOKEN is set and still wins: unset it too", style="yellow", err=True)


def whoami(json_out: JsonOpt = False) -> None:
    """Show the user your token belongs to."""
    data = client().me()
    emit(data, json_out)
