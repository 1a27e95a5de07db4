"""Proposals, reviews, decisions, allocations and the access report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.access_cmds import JsonOpt, show
from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import (
    Column,
    console,
    count,
    err_console,
    print_json,
    print_record,
    print_table,
    when,
)
from fabbrica.core.access import DECLARATION

allocation_app = typer.Typer(help="Operators: extend, top up, suspend, resume, terminate.")
report_app = typer.Typer(help="Reports for operators and the federation office.")


def _show_proposal(data: Mapping[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    print_record(data, hide=("reviews", "allocation", "declaration", "abstract"))
    if data["reviews"]:
        columns: list[Column] = [
            ("score", lambda r: r["score"]),
            ("comment", lambda r: r["comment"]),
        ]
        if any("reviewer_id" in r for r in data["reviews"]):  # staff only
            columns += [("reviewer", lambda r: r["reviewer_id"]), ("state", lambda r: r["state"])]
        print_table("reviews", columns, data["reviews"])
    if data["allocation"]:
        console.print("[bold]allocation[/bold]")
        print_record(data["allocation"])


def _declared(flag: bool) -> bool:
    """The declaration: the flag, or a yes at the terminal after reading the text."""
    if flag:
        return True
    if not typer.get_text_stream("stdin").isatty():
        raise CliError(
            "the declaration is required: pass --declare-civilian-ai-act to agree to:\n  "
            + DECLARATION,
            BAD_INPUT,
        )
    err_console.print(DECLARATION)
    if not typer.confirm("Do you make this declaration?", default=False):
        raise CliError("not submitted: the declaration was not made", BAD_INPUT)
    return True


def apply(
    project: Annotated[str, typer.Option("--project", help="The project's id.")],
    call: Annotated[str, typer.Option("--call", help="The call's id (see `fabbrica calls`).")],
    gpu_hours: Annotated[float, typer.Option("--gpu-hours", help="GPU-hours requested.")],
    months: Annotated[int, typer.Option("--months", help="Duration in months.")],
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", help="A GPU model the factory offers.")
    ] = None,
    abstract: Annotated[str, typer.Option("--abstract", help="What the GPUs are for.")] = "",
    declare: Annotated[
        bool,
        typer.Option(
            "--declare-civilian-ai-act",
            help="Declare civilian use and EU AI Act compliance (asked for when missing).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Apply to a call; Playground and Fast Lane are decided at once."""
    data = client().apply(
        project=project,
        call=call,
        gpu_hours=gpu_hours,
        months=months,
        gpu_model=gpu_model,
        abstract=abstract,
        declare_civilian_ai_act=_declared(declare),
    )
    _show_proposal(data, json_out)


def proposals(
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only in this state.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List proposals (yours; staff: all)."""
    rows = client().proposals(project_id=project, state=state)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "proposal"),
        [
            ("id", lambda r: r["id"]),
            ("project", lambda r: r["project"]),
            ("call", lambda r: r["call"]),
            ("state", lambda r: r["state"]),
            ("GPU-h", lambda r: f"{r['gpu_hours']:,.0f}"),
            ("submitted", lambda r: when(r["submitted_at"])),
            ("decided", lambda r: when(r["decided_at"])),
        ],
        rows,
    )


def proposal(proposal_id: int, json_out: JsonOpt = False) -> None:
    """One proposal with its reviews and allocation."""
    _show_proposal(client().proposal(proposal_id), json_out)


def withdraw(proposal_id: int, json_out: JsonOpt = False) -> None:
    """Withdraw a proposal that is not decided yet (PI)."""
    _show_proposal(client().withdraw(proposal_id), json_out)


def review(
    proposal_id: int,
    score: Annotated[
        int | None, typer.Option("--score", min=1, max=5, help="1 (poor) to 5 (excellent).")
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="For the applicant.")] = None,
    conflict: Annotated[
        str | None, typer.Option("--conflict", help="Declare a conflict of interest instead.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Review a proposal (reviewers), or declare a conflict of interest."""
    if score is None and conflict is None:
        raise CliError("give --score 1..5, or --conflict REASON", BAD_INPUT)
    data = client().review(proposal_id, score=score, comment=comment, conflict=conflict)
    _show_proposal(data, json_out)


def assign(proposal_id: int, reviewer_id: int, json_out: JsonOpt = False) -> None:
    """Assign a reviewer to a proposal (operators)."""
    _show_proposal(client().assign_reviewer(proposal_id, reviewer_id), json_out)


def decide(
    proposal_id: int,
    decision: Annotated[str, typer.Argument(help="accept or reject")],
    gpu_hours: Annotated[
        float | None, typer.Option("--gpu-hours", help="Grant fewer than requested.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required to reject).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Accept or reject a proposal (operators)."""
    if decision not in ("accept", "reject"):
        raise CliError(f"decision must be accept or reject, not {decision!r}", BAD_INPUT)
    data = client().decide(proposal_id, decision, gpu_hours=gpu_hours, reason=reason)
    _show_proposal(data, json_out)


# --- allocations -------------------------------------------------------------------------


def allocations(
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List allocations: GPU-hours granted, used and reserved, validity, state."""
    rows = client().allocations(project)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "allocation"),
        [
            ("id", lambda r: r["id"]),
            ("project", lambda r: r["project"]),
            ("factory", lambda r: r["factory"]),
            ("GPU-h", lambda r: f"{r['gpu_hours']:,.0f}"),
            ("used", lambda r: f"{r['used_gpu_hours']:,.1f}"),
            ("reserved", lambda r: f"{r['reserved_gpu_hours']:,.1f}"),
            ("valid until", lambda r: when(r["valid_until"])[:10]),
            ("state", lambda r: r["state"]),
        ],
        rows,
    )


def _change(allocation_id: int, body: dict[str, Any], json_out: bool) -> None:
    show(client().change_allocation(allocation_id, **body), json_out)


Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


@allocation_app.command("show")
def allocation_show(allocation_id: int, json_out: JsonOpt = False) -> None:
    """One allocation."""
    show(client().allocation(allocation_id), json_out)


@allocation_app.command("extend")
def allocation_extend(
    allocation_id: int,
    reason: Reason,
    months: Annotated[int | None, typer.Option("--months", min=1, max=60)] = None,
    until: Annotated[
        dt.datetime | None, typer.Option("--until", help="New end (ISO date).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Extend an allocation by months or to a date."""
    body = {"action": "extend", "reason": reason, "months": months, "until": until}
    _change(allocation_id, body, json_out)


@allocation_app.command("top-up")
def allocation_top_up(
    allocation_id: int,
    gpu_hours: Annotated[float, typer.Option("--gpu-hours", help="GPU-hours to add.")],
    reason: Reason,
    json_out: JsonOpt = False,
) -> None:
    """Add GPU-hours to an allocation."""
    _change(allocation_id, {"action": "top_up", "reason": reason, "gpu_hours": gpu_hours}, json_out)


def _simple(action: str) -> Any:
    def command(allocation_id: int, reason: Reason, json_out: JsonOpt = False) -> None:
        _change(allocation_id, {"action": action, "reason": reason}, json_out)

    command.__doc__ = f"{action.capitalize()} an allocation."
    return command


for _action in ("suspend", "resume", "terminate"):
    allocation_app.command(_action)(_simple(_action))


@allocation_app.command("report")
def allocation_report(
    allocation_id: int,
    file: Annotated[Path, typer.Option("--file", help="The final report, as text.")],
    json_out: JsonOpt = False,
) -> None:
    """Submit the final report (PI), due within 3 months of the end."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {file}: {exc}", BAD_INPUT) from exc
    show(client().submit_final_report(allocation_id, text), json_out)


@allocation_app.command("audit")
def allocation_audit(allocation_id: int, json_out: JsonOpt = False) -> None:
    """Every change of an allocation: who, when, what, why."""
    rows = client().allocation_audit(allocation_id)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "change"),
        [
            ("when", lambda r: when(r["at"])),
            ("who", lambda r: r["actor_id"] or "system"),
            ("action", lambda r: r["action"]),
            ("reason", lambda r: r["reason"]),
        ],
        rows,
    )


@report_app.command("access")
def report_access(json_out: JsonOpt = False) -> None:
    """Proposals by mode, state, country, organisation type and sector; decision times."""
    data = client().access_report()
    if json_out:
        print_json(data)
        return
    rows = [
        {"by": key.removeprefix("by_").replace("_", " "), "value": value, "n": n}
        for key in ("by_mode", "by_state", "by_country", "by_organisation_type", "by_sector")
        for value, n in data[key].items()
    ]
    print_table(
        f"{count(data['proposals'], 'submitted proposal')}",
        [("by", lambda r: r["by"]), ("value", lambda r: r["value"]), ("n", lambda r: r["n"])],
        rows,
    )
    rows = [{"mode": m, **v} for m, v in data["decision_time"].items()]
    print_table(
        "time from submission to decision",
        [
            ("mode", lambda r: r["mode"]),
            ("decided", lambda r: r["decided"]),
            ("median", lambda r: _duration(r["median_seconds"])),
        ],
        rows,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
