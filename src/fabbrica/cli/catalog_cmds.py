"""`fabbrica catalog` and `fabbrica factory`: the federation as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import count, emit, print_record, print_table, say
from fabbrica.cli.params import JsonOpt


def _gpus(row: dict[str, Any]) -> str:
    if row["gpus"] == 0:
        return "unknown"
    return ("≈" if row["gpus_uncertain"] else "") + f"{row['gpus']:,}"


def catalog(
    json_out: JsonOpt = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            help="Validate and show a catalog file here, without a server (operators: check "
            "your own file before `fabbrica up --catalog`).",
        ),
    ] = None,
) -> None:
    """List the factories of the federation: id, country, systems, GPUs.

    The federation's factories: id, name, country, systems and GPUs (`≈` marks estimates,
    `unknown` a factory whose size is not published). With `--file`, validates and shows a
    catalog file locally, without a server: operators check their own file this way.
    """
    if file is not None:
        from fabbrica.catalog.loader import CatalogError, load_catalog
        from fabbrica.catalog.summary import summarise

        try:
            loaded = load_catalog(file)
        except CatalogError as exc:
            raise CliError(str(exc), BAD_INPUT) from exc
        rows: list[Any] = [summarise(f).model_dump(mode="json") for f in loaded.factories]
    else:
        rows = client().factories()
    emit(rows, json_out, _catalog_table)


def _catalog_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "factory", "factories"),
        [
            ("factory", lambda r: r["id"]),
            ("name", lambda r: r["name"] + (" (emulated)" if r["emulated"] else "")),
            ("country", lambda r: r["country"]),
            ("systems", lambda r: r["systems"]),
            ("GPUs", _gpus),
        ],
        rows,
    )
    if any(r["gpus_uncertain"] for r in rows):
        say("≈ estimate from public sources; an operator's catalog overrides it")


def factory(factory_id: str, json_out: JsonOpt = False) -> None:
    """Show one factory with its systems and partitions.

    One factory with its systems and partitions: GPU model, nodes x GPUs per node, billing rule.
    """
    data = client().factory(factory_id)
    emit(data, json_out, _factory_record)


def _factory_record(data: dict[str, Any]) -> None:
    print_record(data, hide=("systems", "uncertain"))
    rows = [
        {**p, "system": s["name"], "status": s["status"]}
        for s in data["systems"]
        for p in s["partitions"]
    ]

    def est(row: dict[str, Any], *fields: str) -> str:
        return "≈" if set(fields) & set(row["uncertain"]) else ""

    print_table(
        "partitions (≈ estimate)",
        [
            ("system", lambda r: f"{r['system']} ({r['status']})"),
            ("partition", lambda r: r["id"]),
            ("GPU", lambda r: r["gpu_model"]),
            ("nodes x GPUs", lambda r: f"{est(r, 'nodes')}{r['nodes']:,} x {r['gpus_per_node']}"),
            ("GPUs", lambda r: f"{est(r, 'nodes', 'gpus_per_node')}{r['gpus']:,}"),
            ("billing", lambda r: f"{r['billing']['rule']} x{r['billing']['factor']:g}"),
        ],
        rows,
    )


def sectors(json_out: JsonOpt = False) -> None:
    """The sectors an organisation may name (`fabbrica org add --sector`).

    The sectors an organisation may name with `fabbrica org add --sector`: by id, by name, or
    by a unique start of either (`health` is `health-life-sciences`).
    """
    rows = client().sectors()
    emit(rows, json_out, _sector_table)


def _sector_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "sector"), [("id", lambda r: r["id"]), ("name", lambda r: r["name"])], rows
    )
