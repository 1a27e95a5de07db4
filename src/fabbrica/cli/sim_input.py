"""What `fabbrica simulate` and `fabbrica plan` share on the way in: options, the trace,
the federation they are given (a file, the catalog, what-ifs), and input checks (exit 2)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import say

if TYPE_CHECKING:
    from fabbrica.sim.federation import Site

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
SHIPPED = ""  # `--catalog` without a file: the shipped catalog

TraceOpt = Annotated[
    Path,
    typer.Option(
        "--trace",
        metavar="FILE",
        help="CSV with columns timestamp, duration, num_gpus, cluster.",
        show_default=False,
    ),
]
FederationOpt = Annotated[
    Path | None,
    typer.Option(
        "--federation",
        metavar="FILE",
        help="JSON or CSV of factories (id, gpus, optional country and clusters). "
        "Default: one factory per cluster of the trace, sized for --load.",
    ),
]
CatalogOpt = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        metavar="[FILE]",
        help="The catalog's factories, partitions and sizes as the federation (without FILE: "
        "the shipped one); unpublished sizes are estimates, marked.",
    ),
]
AddFactoryOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--add-factory",
        metavar="ID:GPUS:MODEL:COUNTRY",
        help="What-if: one more factory (with --catalog or --federation).",
    ),
]
GrowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grow",
        metavar="ID=FACTOR",
        help="What-if: a factory's GPUs times FACTOR (with --catalog or --federation).",
    ),
]
LimitOpt = Annotated[
    float,
    typer.Option(
        "--limit-factor",
        help="Time limit = run time x this, rounded up to the next hour.",
        min=1.0,
        max=100.0,
    ),
]
DepthOpt = Annotated[
    int,
    typer.Option(
        "--queue-depth",
        help="Jobs each scheduling pass looks at, in priority order (as Slurm's "
        "bf_max_job_test); 0: the whole queue.",
        min=0,
        max=1_000_000,
    ),
]

OPTIONAL_VALUE = {"--catalog": SHIPPED}  # options whose value may be left out
_COMMANDS = ("simulate", "plan")


def optional_values(argv: Sequence[str]) -> list[str]:
    """`simulate`/`plan` argv with `--catalog` given a value when it has none (the next
    word is another option, or there is none): Click options always take one."""
    args = list(argv)
    if not args or args[0] not in _COMMANDS:
        return args
    found: list[str] = []
    for index, word in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        if word in OPTIONAL_VALUE and (following is None or following.startswith("-")):
            found.append(f"{word}={OPTIONAL_VALUE[word]}")
        else:
            found.append(word)
    return found


def policies(given: Sequence[str] | None, known: tuple[str, ...]) -> list[str]:
    chosen = list(dict.fromkeys(given or known))
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise CliError(
            f"--policy: unknown {', '.join(unknown)}; choose from {', '.join(known)}", BAD_INPUT
        )
    return chosen


def loads(text: str | None) -> list[float | None]:
    if text is None:
        return [None]
    values: list[float | None] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CliError(f"--load: {part.strip()!r} is not a number", BAD_INPUT) from None
        if not 0 < value <= 100:
            raise CliError(f"--load: {value} is not in (0, 100]", BAD_INPUT)
        values.append(value)
    return values


def outages(texts: Sequence[str]) -> list[Any]:
    from fabbrica.sim.outage import parse

    found = []
    for text in texts:
        try:
            found.append(parse(text))
        except ValueError as exc:
            raise CliError(f"--outage: {exc}", BAD_INPUT) from None
    return found


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise CliError(f"--plot: the file must end in {', '.join(PLOT_SUFFIXES)}", BAD_INPUT)
    if not path.parent.resolve().is_dir():
        raise CliError(f"--plot: directory {path.parent} does not exist", BAD_INPUT)


def load_trace(path: Path) -> Any:
    from fabbrica.sim.trace import TraceError, load

    try:
        return load(path)
    except TraceError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc


def given_sites(
    federation: Path | None,
    catalog: str | None,
    adds: Sequence[str] | None,
    grows: Sequence[str] | None,
) -> tuple[list[Site] | None, str]:
    """The factories given (a federation file or a catalog, what-ifs applied) and where
    they come from; (None, "") for the default federation sized from the trace."""
    from fabbrica.sim import federation as fed
    from fabbrica.sim import whatif

    if federation is not None and catalog is not None:
        raise CliError("--federation and --catalog do not go together; choose one", BAD_INPUT)
    added = _each("--add-factory", adds or [], whatif.parse_add)
    grown = _each("--grow", grows or [], whatif.parse_grow)
    if federation is None and catalog is None:
        if added or grown:
            raise CliError(
                "--add-factory and --grow change a given federation: add --catalog or "
                "--federation FILE",
                BAD_INPUT,
            )
        return None, ""
    if federation is not None:
        try:
            sites, source = fed.read_file(federation), f"federation file {federation}"
        except fed.FederationError as exc:
            raise CliError(str(exc), BAD_INPUT) from exc
    else:
        sites, source = catalog_sites(catalog or None)
    try:
        return whatif.apply(sites, added, grown), source
    except ValueError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc


def catalog_sites(path: str | None) -> tuple[list[Site], str]:
    """The catalog's factories (the shipped catalog when `path` is None) as replayed."""
    from fabbrica.catalog import CatalogError, default_catalog_path, load_catalog
    from fabbrica.sim import whatif

    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        raise CliError(f"--catalog: {exc}", BAD_INPUT) from exc
    fallback = whatif.unpublished_size([f.gpus for f in catalog.factories])
    sites = [
        whatif.factory_site(
            f.id,
            f.country,
            [(p.gpu_model, p.gpus_per_node, p.nodes) for _, p in f.partitions()],
            estimated=f.gpus_uncertain,
            fallback=fallback,
        )
        for f in catalog.factories
    ]
    return sites, f"catalog {path or default_catalog_path()}"


def _each(option: str, texts: Sequence[str], parse: Any) -> list[Any]:
    found = []
    for text in texts:
        try:
            found.append(parse(text))
        except ValueError as exc:
            raise CliError(f"{option}: {exc}", BAD_INPUT) from None
    return found


@contextmanager
def input_errors() -> Iterator[None]:
    """Federation problems are bad input (exit 2)."""
    from fabbrica.sim.federation import FederationError

    try:
        yield
    except FederationError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc


def progress(message: str) -> None:
    say(message, style="dim", err=True)
