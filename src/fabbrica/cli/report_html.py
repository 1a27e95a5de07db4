"""The federation report as one self-contained HTML page: its tables, and charts drawn with
matplotlib (the optional `plot` extra) embedded inline as SVG, text kept as text."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from typing import Any

from fabbrica.cli.report_tables import SECTIONS, Table, tables

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
"""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def render(data: dict[str, Any]) -> str:
    """The page: a title with the period, the charts, then every table of the report."""
    period = data["period"]
    title = f"Federation report, {period['from'][:10]} to {period['to'][:10]} (excluded)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Periods are half-open and in UTC. Factories: "
        + html.escape(", ".join(data["factories"]) or "none")
        + ".</p>",
    ]
    parts += [f"<figure>{svg}</figure>" for svg in charts(data)]
    for table in tables(data):
        parts.append(_table_html(table))
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{rows}</table>"


def charts(data: dict[str, Any]) -> list[str]:
    """Five charts, each with a title and axis labels with units, as SVG text."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(
            "--format html needs matplotlib: install the extra, e.g. pip install 'fabbrica[plot]'"
        ) from exc
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, testable
    matplotlib.rcParams["svg.hashsalt"] = "fabbrica"  # the same page for the same report

    def bars(
        title: str,
        ylabel: str,
        labels: Sequence[str],
        series: dict[str, Sequence[float]],
        xlabel: str,
        target: Sequence[float] | None = None,
    ) -> str:
        figure = Figure(figsize=(9, 4))
        ax = figure.add_subplot()
        width = 0.8 / max(len(series), 1)
        for n, (name, values) in enumerate(series.items()):
            ax.bar([i + n * width for i in range(len(labels))], values, width, label=name)
        if target is not None:
            ax.scatter(
                [i + width * (len(series) - 1) / 2 for i in range(len(labels))],
                target,
                marker="_",
                s=400,
                color="black",
                label="target",
                zorder=3,
            )
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(series) > 1 or target is not None:
            ax.legend()
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
        text = out.getvalue()
        text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # no RDF, no date
        return text[text.index("<svg") :]  # inline: no XML declaration or doctype

    by = data["by"]
    state = by["member_state"]
    mode = by["access_mode"]
    usage = data["utilisation"]
    decisions = data["decisions"]
    funding = data["funding"]
    return [
        bars(
            "GPU-hours granted and used by member state",
            "GPU-hours",
            [r["key"] for r in state],
            {
                "granted": [r["granted_gpu_hours"] for r in state],
                "used": [r["used_gpu_hours"] for r in state],
            },
            "member state of the organisation",
        ),
        bars(
            "GPU-hours granted and used by access mode",
            "GPU-hours",
            [r["key"] for r in mode],
            {
                "granted": [r["granted_gpu_hours"] for r in mode],
                "used": [r["used_gpu_hours"] for r in mode],
            },
            "access mode",
        ),
        bars(
            "Utilisation per factory",
            "utilisation (% of GPU-hours operated)",
            [r["factory"] for r in usage],
            {"used": [100 * (r["utilisation"] or 0) for r in usage]},
            "factory",
        ),
        bars(
            "Time to decision per access mode",
            "time to decision (working days)",
            [r["mode"] for r in decisions],
            {
                "median": [r["median_working_days"] for r in decisions],
                "p90": [r["p90_working_days"] for r in decisions],
            },
            "access mode",
            target=[
                float("nan") if r["target_working_days"] is None else r["target_working_days"]
                for r in decisions
            ],
        ),
        bars(
            "GPU-hours granted through EU calls per factory",
            "EU share of granted GPU-hours (%)",
            [r["factory"] for r in funding],
            {"EU calls": [100 * (r["eu_share"] or 0) for r in funding]},
            "factory",
            target=[100 * (r["eu_share_target"] or 0) for r in funding],
        ),
    ]


__all__ = ["SECTIONS", "PlotUnavailable", "charts", "render"]
