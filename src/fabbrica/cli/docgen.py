"""docs/cli.md, generated from the Typer app: `python -m fabbrica.cli.docgen > docs/cli.md`.

The intro below and each group's opening lines are written here by hand; everything about a
command (synopsis, text, options, defaults, limits) comes from the command itself, so the
page cannot drift from `fabbrica --help`. tests/unit/test_cli_docs.py fails when the
committed page differs from what this prints.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperOption

if TYPE_CHECKING:
    from typer._click.core import Command, Context

REGENERATE = "uv run --frozen python -m fabbrica.cli.docgen > docs/cli.md"

INTRO = f"""\
# The `fabbrica` command

<!-- Generated from the Typer app: edit the commands' help (src/fabbrica/cli/) or the
intro in src/fabbrica/cli/docgen.py, then run `{REGENERATE}`. -->

Exit codes: `0` success, `1` failure (server unreachable, not allowed, server error),
`2` bad input or usage (unknown option, invalid value, a 4xx answer such as 404, 409 or 422,
no token configured, an invalid catalog), `130` interrupted (Ctrl-C). Errors go to standard
error as one line `error: ...` naming the field where there is one. Every listing takes
`--json`. Names, messages and patterns are printed as written (never read as markup);
tables keep ids whole, and into a pipe each row stays on one line (set `COLUMNS` to wrap).
GPU-hours are printed as people read them (`0.0016`, `1,250`); `--json` gives the exact
numbers.

Client commands talk to the API at `FABBRICA_URL` with `FABBRICA_TOKEN`, or what
`fabbrica login` saved (see [configuration.md](configuration.md)). `fabbrica --help` lists
the commands by what they are for, as the sections below do; `fabbrica COMMAND --help`
shows what follows here for each.
"""

# Opening lines of a group of commands, by the group's name in `fabbrica --help`.
GROUP_INTROS = {
    "Operate": "Servers, users, calls, decisions and site agents. See [agents.md](agents.md) "
    "for installing an agent next to a real Slurm.",
    "Simulate": "These run locally (no server). See [simulator.md](simulator.md) for the model.",
}
# Section titles that differ from the group's name (other pages link to these anchors).
TITLES = {"Simulate": "Simulation and capacity planning"}
MAX_LISTED_OPTIONS = 4  # a synopsis names this many optional options, else says [OPTIONS]


def render(root: Command | None = None) -> str:
    """The whole page."""
    if root is None:
        from fabbrica.cli.app import command

        root = command()
    ctx = typer.Context(root, info_name="fabbrica")
    groups: dict[str, list[str]] = {}
    for name, sub in root.commands.items():  # type: ignore[attr-defined]
        panel = getattr(sub, "rich_help_panel", None) or "Other"
        groups.setdefault(panel, []).extend(_sections(sub, f"fabbrica {name}", ctx))
    parts = [INTRO]
    for panel, sections in groups.items():
        intro = GROUP_INTROS.get(panel)
        title = TITLES.get(panel, panel)
        parts.append(f"## {title}\n" + (f"\n{intro}\n" if intro else ""))
        parts.extend(sections)
    return "\n".join(parts)


def _sections(cmd: Command, path: str, parent: Context) -> list[str]:
    ctx = typer.Context(cmd, info_name=path.rsplit(" ", 1)[-1], parent=parent)
    subcommands: dict[str, Command] = getattr(cmd, "commands", {})
    found = []
    if not subcommands or getattr(cmd, "invoke_without_command", False):
        found.append(_section(cmd, path, ctx))
    for name, sub in subcommands.items():
        found.extend(_sections(sub, f"{path} {name}", ctx))
    return found


def _section(cmd: Command, path: str, ctx: Context) -> str:
    params = [p for p in cmd.params if not getattr(p, "hidden", False)]
    if getattr(cmd, "commands", None):  # a group run as a command: its options only
        params = [p for p in params if isinstance(p, TyperOption)]
    text = inspect.cleandoc(cmd.help or "")
    options = []
    for param in params:
        if isinstance(param, TyperArgument) and param.help:
            options.append(_argument_line(param))
        elif isinstance(param, TyperOption) and param.name != "json_out":
            options.append(_option_line(param, ctx))
    lines = [f"### `{_synopsis(path, params, ctx)}`", "", text]
    if options:
        lines += ["", *options]
    return "\n".join(lines) + "\n"


def _synopsis(path: str, params: list[Any], ctx: Context) -> str:
    words = [path]
    optional = [p for p in params if isinstance(p, TyperOption) and not p.required]
    for param in params:
        if isinstance(param, TyperArgument):
            words.append(param._usage_display_name())
        elif param.required:
            words.append(_option_usage(param, ctx))
    if len(optional) > MAX_LISTED_OPTIONS:
        words.append("[OPTIONS]")
    else:
        words += [f"[{_option_usage(p, ctx)}]" for p in optional]
    return " ".join(words)


def _option_usage(param: TyperOption, ctx: Context) -> str:
    names = param.opts[0] + (f"|{param.secondary_opts[0]}" if param.secondary_opts else "")
    value = param.display_type_rich(ctx)
    return f"{names} {value}" if value else names


def _argument_line(param: TyperArgument) -> str:
    return f"- `{param._usage_display_name()}`: {' '.join((param.help or '').split())}"


def _option_line(param: TyperOption, ctx: Context) -> str:
    facts = []
    if param.required:
        facts.append("required")
    limits = param._get_number_range_help_str()
    if limits:
        facts.append(limits)
    default = _default(param)
    if default is not None:
        facts.append(f"default `{default}`")
    if param.multiple:
        facts.append("repeatable")
    help_text = " ".join((param.help or "").split())
    extra = f" ({'; '.join(facts)})" if facts else ""
    return f"- `{_option_usage(param, ctx)}`: {help_text}{extra}".rstrip()


def _default(param: TyperOption) -> str | None:
    value = param.default
    if param.show_default is False or value in (None, False, [], ""):
        return None
    if callable(value):
        return None
    return str(getattr(value, "value", value))


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
