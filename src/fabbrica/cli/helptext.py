"""Help that reads like the docs: plain placeholders, and the job spec's fields from its model.

Typer shows `<bool>` after flags, `<str>` after every value and `{file}` for required
arguments; `plain_placeholders` gives flags none, values one upper-case word (`TEXT`,
`INTEGER`, `PATH`, or the choices `a|b`), and arguments their upper-case name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.core import TyperArgument, TyperOption

from fabbrica.core.jobspec import JobSpec

if TYPE_CHECKING:
    from typer._click.core import Command, Context

_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "datetime": "DATE", "bool": ""}


class _Option(TyperOption):
    def display_type_rich(self, ctx: Context) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        return placeholder(self.display_type(ctx))  # repeatable options say so in their help


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


def placeholder(typer_label: str) -> str:
    """`<int range>` -> `INTEGER`, `<user|admin>` -> `user|admin`, `<path>` -> `PATH`."""
    label = typer_label.strip("<>").removeprefix("list[").removesuffix("]")
    label = label.removesuffix(" range")
    if "|" in label:
        return label
    return _WORDS.get(label, label.upper())


def plain_placeholders(command: Command) -> Command:
    """Every parameter of `command` and its subcommands shown with plain placeholders."""
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(param, TyperOption):
            param.__class__ = _Option
        elif isinstance(param, TyperArgument):
            param.__class__ = _Argument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        plain_placeholders(sub)
    return command


# --- the job spec's fields -----------------------------------------------------------------

# What each field means, by its dotted path. Types, defaults and limits come from the model
# itself; tests/cli/test_help.py fails when a field of JobSpec has no line here.
SPEC_FIELDS = {
    "name": "the job's name",
    "project": "the project to charge (else `--project`, or your only project)",
    "resources": "what the job needs",
    "resources.gpus": "GPUs per node",
    "resources.gpu_model": "a GPU model such as `a100` or `h100` (`any`: whichever is free)",
    "resources.nodes": "nodes (more than one needs a factory that runs multi-node jobs)",
    "resources.cpus_per_gpu": "CPU cores per GPU",
    "resources.time_limit": "the longest the job may run: `30m`, `2h`, `1h30m`, `1d`, "
    "`01:30:00`; the worst case charged against your allocation",
    "placement": "where the job may run",
    "placement.factories": "only these factories (catalog ids)",
    "placement.countries": "only factories in these countries (ISO codes such as `IT`, `DE`)",
    "workdir": "the folder uploaded with the job, relative to the spec's folder and inside "
    "it (`.git`, `.venv`, `__pycache__` left out)",
    "setup": "a shell command run before `run` (e.g. `pip install -r requirements.txt`)",
    "run": "the shell command that is the job",
    "env": "environment variables for `setup` and `run`",
    "outputs": "paths inside the job's folder kept for `fabbrica download`",
    "datasets": "data sets of the project, read-only at `$FABBRICA_DATA/<name>` (`name`: the "
    "latest version, `name@3`: version 3); their residency limits where the job runs",
    "checkpoint": "the job saves its state: what it writes in `$FABBRICA_CHECKPOINT_DIR` is "
    "kept across runs of the job",
    "checkpoint.dir": "the folder, inside the job's, that `$FABBRICA_CHECKPOINT_DIR` names",
    "checkpoint.every": "how often the job should save (`$FABBRICA_CHECKPOINT_EVERY`, in seconds)",
    "checkpoint.grace": "how long before the time limit (or a stop for requeue) the job gets "
    "SIGUSR1 to save (on Slurm `--signal=B:USR1@<grace>`)",
    "resume": "a run that is lost or reaches its time limit queues the job again; the next "
    "run starts with the checkpoints of the last (each run charged once)",
    "array": "run as an array of tasks (`1-100`, `0-15:4`, `1,3,7`), each with "
    "`FABBRICA_ARRAY_INDEX`",
}


_DURATIONS = ("time_limit", "checkpoint.every", "checkpoint.grace")


def spec_fields(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, one line: type, required or default, limits, meaning) per field."""
    lines = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_of(info.annotation)
        kind = "mapping" if nested else _kind(info.annotation)
        if path.endswith(_DURATIONS):
            kind = "duration"
        facts = [kind, *_limits(info, collection=kind.startswith(("list", "mapping")))]
        if info.is_required():
            facts.insert(0, "required")
        elif nested is None and (default := _default(path, info)) is not None:
            facts.append(f"default `{default}`")
        meaning = SPEC_FIELDS.get(path, info.description)
        lines.append((path, f"{meaning or ''} ({', '.join(facts)})"))
        if nested is not None:
            lines += spec_fields(nested, f"{path}.")
    return lines


def spec_help() -> str:
    """The job spec's fields as a Markdown list, for `fabbrica run --help` and docs/cli.md."""
    items = [f"- `{path}`: {text}" for path, text in spec_fields()]
    return "The spec's fields (YAML or JSON):\n\n" + "\n".join(items)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]  # an optional mapping (`checkpoint`)
    return None


def _kind(annotation: Any) -> str:
    origin, args = get_origin(annotation), [a for a in get_args(annotation) if a is not type(None)]
    if origin is tuple or origin is list:
        return f"list of {_kind(args[0])}s"
    if origin is dict:
        return "mapping of names to texts"
    if args and origin is not None and len(args) == 1:  # X | None
        return _kind(args[0])
    base = getattr(annotation, "__origin__", annotation)
    names = {str: "text", int: "integer", float: "number", bool: "true or false"}
    return names.get(base, getattr(base, "__name__", str(base)))


def _limits(info: FieldInfo, *, collection: bool) -> list[str]:
    found = []
    size = " entries" if collection else " characters"
    for item in info.metadata:
        for attr, text in (("ge", "at least"), ("le", "at most"), ("max_length", "at most")):
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{text} {value:,}" + (size if attr == "max_length" else ""))
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            found.append(f"matching `{pattern}`")
    return found


def _default(path: str, info: FieldInfo) -> str | None:
    default = info.get_default(call_default_factory=True)
    if default in (None, (), {}):
        return None
    if path.endswith(_DURATIONS):  # stored in seconds, written as a duration
        if default % 60:
            return f"{default}s"
        return f"{default // 3600}h" if default % 3600 == 0 else f"{default // 60}m"
    return str(default)
