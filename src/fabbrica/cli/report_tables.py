"""The federation report's JSON as tables (for the terminal and the HTML page) and as CSV
rows (section, key, field, value: one figure a line, for spreadsheets)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fabbrica.cli.output import cell, gpu_hours

SECTIONS = (
    "totals",
    "by",
    "startups_and_smes",
    "decisions",
    "time_to_first_job",
    "utilisation",
    "funding",
)


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _hours(value: float | None) -> str:
    return gpu_hours(value)


Get = Callable[[dict[str, Any]], str]


def _table(title: str, columns: list[tuple[str, Get]], rows: list[dict[str, Any]]) -> Table:
    return Table(
        title, tuple(h for h, _ in columns), [tuple(get(row) for _, get in columns) for row in rows]
    )


def tables(data: dict[str, Any]) -> list[Table]:
    """Every table of the report, in the order people read it."""
    usage_columns: list[tuple[str, Get]] = [
        ("granted", lambda r: _hours(r["granted_gpu_hours"])),
        ("allocations", lambda r: cell(r["allocations"])),
        ("used", lambda r: _hours(r["used_gpu_hours"])),
        ("usage records", lambda r: cell(r["usage_records"])),
    ]
    out = [_table("Totals", [("", lambda r: "all"), *usage_columns], [data["totals"]])]
    for dimension, rows in data["by"].items():
        name = dimension.replace("_", " ")
        out.append(_table(f"By {name}", [(name, lambda r: r["key"]), *usage_columns], rows))
    small = data["startups_and_smes"]
    out.append(
        _table(
            "Startups and SMEs",
            [
                ("", lambda r: "startups and SMEs"),
                ("granted", lambda r: _hours(r["granted_gpu_hours"])),
                ("share of granted", lambda r: _share(r["granted_share"])),
                ("used", lambda r: _hours(r["used_gpu_hours"])),
                ("share of used", lambda r: _share(r["used_share"])),
            ],
            [small],
        )
    )
    out.append(
        _table(
            "Decisions per access mode (working days)",
            [
                ("mode", lambda r: r["mode"]),
                ("decisions", lambda r: cell(r["decisions"])),
                ("target", lambda r: cell(r["target_working_days"])),
                ("within target", lambda r: cell(r["within_target"])),
                ("share within", lambda r: _share(r["within_target_share"])),
                ("median", lambda r: cell(r["median_working_days"])),
                ("p90", lambda r: cell(r["p90_working_days"])),
            ],
            data["decisions"],
        )
    )
    out.append(
        _table(
            "From acceptance to the first job running (hours)",
            [
                ("mode", lambda r: r["mode"]),
                ("allocations", lambda r: cell(r["allocations"])),
                ("started", lambda r: cell(r["started"])),
                ("median", lambda r: cell(r["median_hours"])),
                ("p90", lambda r: cell(r["p90_hours"])),
            ],
            data["time_to_first_job"],
        )
    )
    out.append(
        _table(
            "Utilisation per factory",
            [
                ("factory", lambda r: r["factory"]),
                ("GPUs", lambda r: cell(r["gpus"])),
                ("operated", lambda r: _hours(r["operated_gpu_hours"])),
                ("used", lambda r: _hours(r["used_gpu_hours"])),
                ("utilisation", lambda r: _share(r["utilisation"])),
            ],
            data["utilisation"],
        )
    )
    out.append(
        _table(
            "EU calls and national access per factory",
            [
                ("factory", lambda r: r["factory"]),
                ("EU calls", lambda r: _hours(r["eu_gpu_hours"])),
                ("national", lambda r: _hours(r["national_gpu_hours"])),
                ("EU share", lambda r: _share(r["eu_share"])),
                ("EU share target", lambda r: _share(r["eu_share_target"])),
            ],
            data["funding"],
        )
    )
    return out


def csv_rows(data: dict[str, Any]) -> Iterator[tuple[str, str, str, object]]:
    """(section, key, field, value) for every figure of the report."""
    for field, value in data["period"].items():
        yield ("period", "", field, value)
    for field, value in data["totals"].items():
        yield ("totals", "", field, value)
    for dimension, rows in data["by"].items():
        for row in rows:
            for field, value in row.items():
                if field != "key":
                    yield (f"by_{dimension}", row["key"], field, value)
    for field, value in data["startups_and_smes"].items():
        yield ("startups_and_smes", "", field, value)
    for section, key in (
        ("decisions", "mode"),
        ("time_to_first_job", "mode"),
        ("utilisation", "factory"),
        ("funding", "factory"),
    ):
        for row in data[section]:
            for field, value in row.items():
                if field != key:
                    yield (section, row[key], field, value)


def to_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "key", "field", "value"))
    for section, key, field, value in csv_rows(data):
        writer.writerow((section, key, field, "" if value is None else value))
    return out.getvalue()
