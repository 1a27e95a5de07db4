"""The access journey: organisations, projects, calls, proposals, reviews, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.output import Column, count, print_json, print_record, print_table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

org_app = typer.Typer(help="Organisations (startups, SMEs, industry, academia ...).")
project_app = typer.Typer(help="Projects: members, invitations, the PI role.")
call_app = typer.Typer(help="Operators: open, close and tune calls.")


def show(data: Any, json_out: bool, *, hide: tuple[str, ...] = ()) -> None:
    if json_out:
        print_json(data)
    else:
        print_record(data, hide=hide)


# --- organisations -----------------------------------------------------------------------


@org_app.command("add")
def org_add(
    name: str,
    country: Annotated[str, typer.Option("--country", help="Legal country, e.g. IT.")],
    type_: Annotated[
        str,
        typer.Option("--type", help="startup, sme, large_industry, academia or public_sector."),
    ],
    sector: Annotated[str | None, typer.Option("--sector", help="A catalog sector id.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an organisation; you become its first admin."""
    show(client().create_organisation(name, country=country, type=type_, sector=sector), json_out)


@org_app.command("list")
def org_list(json_out: JsonOpt = False) -> None:
    """Your organisations."""
    rows = client().organisations()
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "organisation"),
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: r["name"]),
            ("country", lambda r: r["country"]),
            ("type", lambda r: r["type"]),
            ("sector", lambda r: r["sector"]),
        ],
        rows,
    )


@org_app.command("add-member")
def org_add_member(
    org_id: int,
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make them an admin too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a registered user to your organisation (admins); they join with `org join`."""
    data = client().add_organisation_member(org_id, email, admin=admin)
    show(data, json_out)


@org_app.command("join")
def org_join(org_id: int, json_out: JsonOpt = False) -> None:
    """Join an organisation whose admin added you."""
    show(client().join_organisation(org_id), json_out)


@org_app.command("show")
def org_show(org_id: int, json_out: JsonOpt = False) -> None:
    """One organisation with its members."""
    show(client().organisation(org_id), json_out)


# --- projects ----------------------------------------------------------------------------


def _show_project(data: Mapping[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    print_record(data, hide=("members",))
    print_table(
        "members",
        [
            ("user", lambda r: r["user_id"]),
            ("name", lambda r: r["name"]),
            ("email", lambda r: r["email"]),
            ("role", lambda r: r["role"]),
        ],
        data["members"],
    )


@project_app.command("add")
def project_add(
    title: str,
    org: Annotated[int, typer.Option("--org", help="The organisation's id.")],
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="Access mode the project is opened for (default playground)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a project; you become its principal investigator."""
    _show_project(client().create_project(title, org_id=org, mode=mode), json_out)


@project_app.command("list")
def project_list(
    org: Annotated[int | None, typer.Option("--org", help="Only this organisation's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Your projects."""
    rows = client().projects(org)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "project"),
        [
            ("id", lambda r: r["id"]),
            ("title", lambda r: r["title"]),
            ("organisation", lambda r: r["organisation"]),
            ("members", lambda r: len(r["members"])),
        ],
        rows,
    )


@project_app.command("show")
def project_show(project_id: str, json_out: JsonOpt = False) -> None:
    """One project with its members."""
    _show_project(client().project(project_id), json_out)


@project_app.command("invite")
def project_invite(project_id: str, email: str, json_out: JsonOpt = False) -> None:
    """Invite someone by email (PI only); they accept with the token in the email."""
    show(client().invite(project_id, email), json_out)


@project_app.command("accept")
def project_accept(token: str, json_out: JsonOpt = False) -> None:
    """Accept an invitation sent to your email."""
    _show_project(client().accept_invitation(token), json_out)


@project_app.command("remove")
def project_remove(project_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Remove a member (PI only)."""
    _show_project(client().remove_member(project_id, user_id), json_out)


@project_app.command("transfer-pi")
def project_transfer_pi(project_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Hand the PI role to a member (PI only)."""
    _show_project(client().transfer_pi(project_id, user_id), json_out)


# --- calls -------------------------------------------------------------------------------


def calls(
    all_: Annotated[bool, typer.Option("--all", help="Closed calls too.")] = False,
    factory: Annotated[str | None, typer.Option("--factory", help="One factory's.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="One access mode's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the open calls: id, mode, factory, decision, capacity."""
    rows = client().calls(state="all" if all_ else "open", factory=factory, mode=mode)
    if json_out:
        print_json(rows)
        return
    columns: list[Column] = [
        ("id", lambda r: r["id"]),
        ("mode", lambda r: r["mode"]),
        ("decision", lambda r: r["decision"]),
        ("offered GPU-h", lambda r: _hours(r["offered_gpu_hours"])),
        ("committed", lambda r: _hours(r["committed_gpu_hours"])),
    ]
    if all_:
        columns.insert(2, ("state", lambda r: r["state"]))
    print_table(count(len(rows), "call"), columns, rows)


def _hours(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


@call_app.command("set")
def call_set(
    call_id: str,
    open_: Annotated[
        bool | None, typer.Option("--open/--close", help="Open or close the call.")
    ] = None,
    decision: Annotated[str | None, typer.Option("--decision", help="automatic or manual.")] = None,
    offered_gpu_hours: Annotated[
        float | None, typer.Option("--offered-gpu-hours", help="Capacity for auto-decisions.")
    ] = None,
    min_reviews: Annotated[int | None, typer.Option("--min-reviews")] = None,
    min_average_score: Annotated[float | None, typer.Option("--min-average-score")] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (shown to applicants).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a call (operators)."""
    data = client().update_call(
        call_id,
        open=open_,
        decision=decision,
        offered_gpu_hours=offered_gpu_hours,
        min_reviews=min_reviews,
        min_average_score=min_average_score,
        reason=reason,
    )
    show(data, json_out)


@call_app.command("add-reviewer")
def call_add_reviewer(call_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Add a reviewer to a call's round-robin pool (operators)."""
    show(client().add_call_reviewer(call_id, user_id), json_out)
