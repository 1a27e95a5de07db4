"""Proposals, reviews, decisions, allocations and the access report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import (
    Column,
    count,
    emit,
    gpu_hours,
    print_record,
    print_table,
    say,
    when,
)
from fabbrica.cli.params import JsonOpt, ProjectFilterOpt, positive
from fabbrica.cli.report_cmds import report_federation
from fabbrica.core.access import DECLARATION

allocation_app = typer.Typer(
    help="Operators: extend, top up, suspend, resume, terminate.", no_args_is_help=True
)
report_app = typer.Typer(
    help="Reports for operators and the federation office.", no_args_is_help=True
)
report_app.command("federation")(report_federation)


def _show_proposal(data: Mapping[str, Any], json_out: bool) -> None:
    emit(data, json_out, _proposal_record)


def _proposal_record(data: Mapping[str, Any]) -> None:
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
        say("allocation", style="bold")
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
    say(DECLARATION, err=True)
    if not typer.confirm("Do you make this declaration?", default=False):
        raise CliError("not submitted: the declaration was not made", BAD_INPUT)
    return True


def apply(
    project: Annotated[
        str, typer.Option("--project", metavar="PROJECT_ID", help="The project's id.")
    ],
    call: Annotated[
        str, typer.Option("--call", metavar="CALL_ID", help="The call's id (see `fabbrica calls`).")
    ],
    gpu_hours: Annotated[
        float, typer.Option("--gpu-hours", help="GPU-hours requested.", callback=positive)
    ],
    months: Annotated[int, typer.Option("--months", help="Duration in months.")],
    gpu_model: Annotated[
        str | None,
        typer.Option("--gpu-model", metavar="GPU_MODEL", help="A GPU model the factory offers."),
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
    """Apply to a call; Playground and Fast Lane are decided at once.

    Submits a proposal (PI) and prints it with `id` and `state`. `--gpu-model` takes the
    factory's model id or its name (`a100`, `A100`, `NVIDIA A100`). Without
    `--declare-civilian-ai-act` the CLI shows the declaration of civilian use and EU AI Act
    compliance and asks; with no terminal it refuses with exit code 2. Eligibility is checked
    at once, with every broken rule named (exit 2, nothing stored): country, organisation type,
    GPU-hours range, duration, GPU model, a closed call (with its reason and next cut-off), an
    overdue final report. Playground and Fast Lane proposals are decided at once within the
    call's offered capacity: the state is `accepted` and the object carries its `allocation`.
    Peer-reviewed modes (Large Scale, AI for Science, Regular, Extreme Scale) go `in_review`;
    the others wait `submitted` for an operator.
    """
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
    project: ProjectFilterOpt = None,
    state: Annotated[
        str | None, typer.Option("--state", metavar="STATE", help="Only in this state.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List proposals (yours; staff: all).

    Proposals of your projects (operators: all).
    """
    rows = client().proposals(project_id=project, state=state)
    emit(rows, json_out, _proposal_table)


def _proposal_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "proposal"),
        [
            ("id", lambda r: r["id"]),
            ("project", lambda r: r["project"]),
            ("call", lambda r: r["call"]),
            ("state", lambda r: r["state"]),
            ("GPU-h", lambda r: gpu_hours(r["gpu_hours"], unit=False)),
            ("submitted", lambda r: when(r["submitted_at"])),
            ("decided", lambda r: when(r["decided_at"])),
        ],
        rows,
    )


def proposal(proposal_id: int, json_out: JsonOpt = False) -> None:
    """One proposal with its reviews and allocation.

    One proposal, its reviews (scores and comments; reviewer identities only for operators)
    and its allocation.
    """
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
    """Review a proposal (reviewers), or declare a conflict of interest.

    A reviewer scores a proposal in review, or declares a conflict of interest (another
    reviewer is then assigned). A reviewer from the applicant's organisation or project, or
    who declared a conflict, is refused.
    """
    if score is None and conflict is None:
        raise CliError("give --score 1..5, or --conflict REASON", BAD_INPUT)
    data = client().review(proposal_id, score=score, comment=comment, conflict=conflict)
    _show_proposal(data, json_out)


def assign(proposal_id: int, reviewer_id: int, json_out: JsonOpt = False) -> None:
    """Assign a reviewer to a proposal (operators).

    Operators assign a reviewer; a conflicted one is refused.
    """
    _show_proposal(client().assign_reviewer(proposal_id, reviewer_id), json_out)


def decide(
    proposal_id: int,
    decision: Annotated[str, typer.Argument(help="accept or reject")],
    gpu_hours: Annotated[
        float | None,
        typer.Option("--gpu-hours", help="Grant fewer than requested.", callback=positive),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (required to reject).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Accept or reject a proposal (operators).

    Operators accept (with the requested or fewer GPU-hours) or reject (a reason is required).
    A proposal in review can be decided only once the call's minimum number of reviews is in,
    and accepted only if their average reaches the call's minimum score.
    """
    if decision not in ("accept", "reject"):
        raise CliError(f"decision must be accept or reject, not {decision!r}", BAD_INPUT)
    data = client().decide(proposal_id, decision, gpu_hours=gpu_hours, reason=reason)
    _show_proposal(data, json_out)


# --- allocations -------------------------------------------------------------------------


def allocations(
    project: ProjectFilterOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List allocations: GPU-hours granted, used and reserved, validity, state.

    Allocations with `id`, `project`, `factory`, `gpu_hours` (granted), `used_gpu_hours`,
    `reserved_gpu_hours`, `remaining_gpu_hours`, `valid_from`, `valid_until`, `state`
    (`active|suspended|terminated|expired`) and `final_report_due`.
    """
    rows = client().allocations(project)
    emit(rows, json_out, _allocation_table)


def _allocation_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "allocation"),
        [
            ("id", lambda r: r["id"]),
            ("project", lambda r: r["project"]),
            ("factory", lambda r: r["factory"]),
            ("GPU-h", lambda r: gpu_hours(r["gpu_hours"], unit=False)),
            ("used", lambda r: gpu_hours(r["used_gpu_hours"], unit=False)),
            ("reserved", lambda r: gpu_hours(r["reserved_gpu_hours"], unit=False)),
            ("valid until", lambda r: when(r["valid_until"])[:10]),
            ("state", lambda r: r["state"]),
        ],
        rows,
    )


def notices(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Budget alerts of your projects' allocations, newest first.

    The notices of the emails members get once when an allocation passes 75, 90 and 100 %
    of its granted GPU-hours and when it has 14 and 3 days left: `id`, `allocation`,
    `project`, `factory`, `threshold` (`used_75|used_90|used_100|days_14|days_3`),
    `message`, `used_gpu_hours` and `gpu_hours` (granted) when it was written,
    `valid_until`, `created_at`.
    """
    emit(client().notices(limit), json_out, _notice_table)


def _notice_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "notice"),
        [
            ("when", lambda r: when(r["created_at"])[:16]),
            ("allocation", lambda r: r["allocation"]),
            ("project", lambda r: r["project"]),
            ("threshold", lambda r: r["threshold"]),
            ("message", lambda r: r["message"]),
        ],
        rows,
    )


def _change(allocation_id: int, body: dict[str, Any], json_out: bool) -> None:
    emit(client().change_allocation(allocation_id, **body), json_out)


Reason = Annotated[
    str, typer.Option("--reason", metavar="TEXT", help="Why (kept in the audit log).")
]


@allocation_app.command("show")
def allocation_show(allocation_id: int, json_out: JsonOpt = False) -> None:
    """One allocation."""
    emit(client().allocation(allocation_id), json_out)


@allocation_app.command("extend")
def allocation_extend(
    allocation_id: int,
    reason: Reason,
    months: Annotated[
        int | None, typer.Option("--months", min=1, max=60, help="Months to add.")
    ] = None,
    until: Annotated[
        dt.datetime | None, typer.Option("--until", metavar="DATE", help="New end (ISO date).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Extend an allocation by months or to a date.

    Operators extend an allocation (an expired one becomes active again).
    """
    body = {"action": "extend", "reason": reason, "months": months, "until": until}
    _change(allocation_id, body, json_out)


@allocation_app.command("top-up")
def allocation_top_up(
    allocation_id: int,
    gpu_hours: Annotated[
        float, typer.Option("--gpu-hours", help="GPU-hours to add.", callback=positive)
    ],
    reason: Reason,
    json_out: JsonOpt = False,
) -> None:
    """Add GPU-hours to an allocation."""
    _change(allocation_id, {"action": "top_up", "reason": reason, "gpu_hours": gpu_hours}, json_out)


_SIMPLE = {
    "suspend": "Suspend an active allocation (operators).",
    "resume": "Resume a suspended allocation (operators).",
    "terminate": "End an allocation now (operators); the final report falls due 3 months later.",
}


def _simple(action: str) -> Any:
    def command(allocation_id: int, reason: Reason, json_out: JsonOpt = False) -> None:
        _change(allocation_id, {"action": action, "reason": reason}, json_out)

    command.__doc__ = _SIMPLE[action]
    return command


for _action in ("suspend", "resume", "terminate"):
    allocation_app.command(_action)(_simple(_action))


@allocation_app.command("report")
def allocation_report(
    allocation_id: int,
    file: Annotated[
        Path, typer.Option("--file", metavar="FILE", help="The final report, as text.")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Submit the final report (PI), due within 3 months of the end.

    The PI submits the final report (text), due within 3 months of the end. A PI with an
    overdue report cannot submit a new proposal; the refusal names the project.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {file}: {exc}", BAD_INPUT) from exc
    emit(client().submit_final_report(allocation_id, text), json_out)


@allocation_app.command("audit")
def allocation_audit(allocation_id: int, json_out: JsonOpt = False) -> None:
    """Every change of an allocation: who, when, what, why."""
    rows = client().allocation_audit(allocation_id)
    emit(rows, json_out, _audit_table)


def _audit_table(rows: list[dict[str, Any]]) -> None:
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
    """Proposals by mode, state, country, organisation type and sector; decision times.

    Operators and the federation office: submitted proposals by mode, state, country,
    organisation type and sector, and the median time from submission to decision per mode.
    """
    data = client().access_report()
    emit(data, json_out, _access_report)


def _access_report(data: dict[str, Any]) -> None:
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
