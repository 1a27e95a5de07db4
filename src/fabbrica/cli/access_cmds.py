"""The access journey: organisations, projects, calls, proposals, reviews, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.output import (
    Column,
    count,
    emit,
    gpu_hours,
    print_record,
    print_table,
)
from fabbrica.cli.params import JsonOpt, finite, positive

org_app = typer.Typer(
    help="Organisations (startups, SMEs, industry, academia ...).", no_args_is_help=True
)
project_app = typer.Typer(help="Projects: members, invitations, the PI role.", no_args_is_help=True)
call_app = typer.Typer(help="Operators: open, close and tune calls.", no_args_is_help=True)


# --- organisations -----------------------------------------------------------------------


@org_app.command("add")
def org_add(
    name: str,
    country: Annotated[
        str, typer.Option("--country", metavar="CC", help="Legal country, e.g. IT.")
    ],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="startup, sme, large_industry, academia or public_sector.",
        ),
    ],
    sector: Annotated[
        str | None, typer.Option("--sector", metavar="SECTOR", help="A catalog sector id.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an organisation; you become its first admin.

    The organisation has a legal country, a type (`startup`, `sme`, `large_industry`,
    `academia` or `public_sector`) and a sector from `fabbrica sectors`; it is printed with
    its `id`.
    """
    data = client().create_organisation(name, country=country, type=type_, sector=sector)
    emit(data, json_out)


@org_app.command("list")
def org_list(json_out: JsonOpt = False) -> None:
    """Your organisations (operators and admins: all)."""
    rows = client().organisations()
    emit(rows, json_out, _org_table)


def _org_table(rows: list[dict[str, Any]]) -> None:
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
    """Add a registered user to your organisation (admins); they join with `org join`.

    Organisation admins add a registered user, who is told by email and becomes a member only
    by joining (`fabbrica org join`): nobody is enrolled without consent. A reviewer who belongs
    to an organisation can never review its proposals.
    """
    data = client().add_organisation_member(org_id, email, admin=admin)
    emit(data, json_out)


@org_app.command("join")
def org_join(org_id: int, json_out: JsonOpt = False) -> None:
    """Join an organisation whose admin added you."""
    emit(client().join_organisation(org_id), json_out)


@org_app.command("show")
def org_show(org_id: int, json_out: JsonOpt = False) -> None:
    """One organisation with its members."""
    emit(client().organisation(org_id), json_out)


# --- projects ----------------------------------------------------------------------------


def _show_project(data: Mapping[str, Any], json_out: bool) -> None:
    emit(data, json_out, _project_record)


def _project_record(data: Mapping[str, Any]) -> None:
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
    org: Annotated[int, typer.Option("--org", metavar="ORG_ID", help="The organisation's id.")],
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="Access mode the project is opened for (default playground).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a project; you become its principal investigator.

    Creates a project and prints it with its `id`, in EuroHPC's style:
    `FAB-AIF-2026PG11-0007` is the access mode the project is opened for (`--mode`, default
    `playground`; PG, FL, LS, SC ...), the year, the intake period (the month for continuous
    intake, the cut-off number otherwise) and a sequence number. The id never changes, whatever
    the project applies to later. You become its principal investigator (PI).
    """
    _show_project(client().create_project(title, org_id=org, mode=mode), json_out)


@project_app.command("list")
def project_list(
    org: Annotated[
        int | None, typer.Option("--org", metavar="ORG_ID", help="Only this organisation's.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Your projects.

    Projects you belong to, directly or through your organisation.
    """
    rows = client().projects(org)
    emit(rows, json_out, _project_table)


def _project_table(rows: list[dict[str, Any]]) -> None:
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
    """One project with its members and their roles."""
    _show_project(client().project(project_id), json_out)


@project_app.command("invite")
def project_invite(project_id: str, email: str, json_out: JsonOpt = False) -> None:
    """Invite someone by email (PI only); they accept with the token in the email.

    The PI invites someone by email. The email carries a token (valid 14 days), also printed
    once here.
    """
    emit(client().invite(project_id, email), json_out)


@project_app.command("accept")
def project_accept(token: str, json_out: JsonOpt = False) -> None:
    """Accept an invitation sent to your email.

    Accept an invitation sent to your email address; you join as a member.
    """
    _show_project(client().accept_invitation(token), json_out)


@project_app.command("remove")
def project_remove(project_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Remove a member (PI only).

    The PI removes a member (not the PI).
    """
    _show_project(client().remove_member(project_id, user_id), json_out)


@project_app.command("transfer-pi")
def project_transfer_pi(project_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Hand the PI role to a member (PI only).

    The PI hands the PI role to a member, and becomes a member.
    """
    _show_project(client().transfer_pi(project_id, user_id), json_out)


# --- calls -------------------------------------------------------------------------------


def calls(
    all_: Annotated[bool, typer.Option("--all", help="Closed calls too.")] = False,
    factory: Annotated[
        str | None, typer.Option("--factory", metavar="FACTORY", help="One factory's.")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", metavar="MODE", help="One access mode's.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the open calls: id, mode, factory, decision, capacity.

    The open calls (`--all`: closed ones too) with `id` (`it4lia-playground`), `mode`,
    `factory`, decision (automatic or manual), the GPU-hours offered to automatic decisions and
    those already committed. Every factory with operating GPUs gets one call per access mode;
    legacy modes with cut-offs (Regular, Extreme Scale) start closed.
    """
    rows = client().calls(state="all" if all_ else "open", factory=factory, mode=mode)
    emit(rows, json_out, lambda rows: _call_table(rows, with_state=all_))


def _call_table(rows: list[dict[str, Any]], *, with_state: bool) -> None:
    columns: list[Column] = [
        ("id", lambda r: r["id"]),
        ("mode", lambda r: r["mode"]),
        ("decision", lambda r: r["decision"]),
        ("offered GPU-h", lambda r: gpu_hours(r["offered_gpu_hours"], unit=False)),
        ("committed", lambda r: gpu_hours(r["committed_gpu_hours"], unit=False)),
    ]
    if with_state:
        columns.insert(2, ("state", lambda r: r["state"]))
    print_table(count(len(rows), "call"), columns, rows)


@call_app.command("set")
def call_set(
    call_id: str,
    open_: Annotated[
        bool | None, typer.Option("--open/--close", help="Open or close the call.")
    ] = None,
    decision: Annotated[
        str | None,
        typer.Option("--decision", metavar="automatic|manual", help="automatic or manual."),
    ] = None,
    offered_gpu_hours: Annotated[
        float | None,
        typer.Option("--offered-gpu-hours", help="Capacity for auto-decisions.", callback=positive),
    ] = None,
    min_reviews: Annotated[
        int | None, typer.Option("--min-reviews", help="Reviews needed before a decision.")
    ] = None,
    min_average_score: Annotated[
        float | None,
        typer.Option(
            "--min-average-score", help="Average score needed to accept.", callback=finite
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (shown to applicants).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a call (operators).

    Operators open or close a call (the reason is shown to applicants who are refused), switch
    it to manual decisions, and set the capacity automatic decisions may commit.
    """
    data = client().update_call(
        call_id,
        open=open_,
        decision=decision,
        offered_gpu_hours=offered_gpu_hours,
        min_reviews=min_reviews,
        min_average_score=min_average_score,
        reason=reason,
    )
    emit(data, json_out)


@call_app.command("add-reviewer")
def call_add_reviewer(call_id: str, user_id: int, json_out: JsonOpt = False) -> None:
    """Add a reviewer to a call's round-robin pool (operators).

    Operators add a reviewer to the call's pool; proposals in review are assigned round-robin
    (fewest assignments first, never a conflicted reviewer).
    """
    emit(client().add_call_reviewer(call_id, user_id), json_out)
