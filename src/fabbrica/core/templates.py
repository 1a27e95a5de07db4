"""Job templates: a job spec with typed parameters. Pure (text in, a template or a
validated job spec or a TemplateError naming the parameter out).

A template is a folder holding `template.yaml` and the files the job runs (its workdir):

```yaml
name: llm-pretrain
description: A small GPT-2 shaped language model trained from scratch on a text
parameters:
  steps: {type: int, default: 300, min: 1, max: 100000, description: optimizer steps}
  time_limit: {type: duration, default: 30m, description: the run's time limit}
shared: [llm]                  # optional: files of `_shared/llm/` beside the templates
spec:                          # a job spec; "{{ name }}" stands for a parameter's value
  name: llm-pretrain
  resources: {gpus: 1, time_limit: "{{ time_limit }}"}
  run: python pretrain.py
  env: {STEPS: "{{ steps }}"}
```

A string that is exactly `"{{ name }}"` becomes the parameter's value with its type (an
integer stays an integer); inside a longer string the value is written as text.
`shared` names folders under `_shared/` (in the template's own templates folder, else the
shipped one) whose files join the workdir, so that templates share scripts without copies;
a file of the template's own wins over a shared one of the same path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from fabbrica.core.jobspec import JobSpec, SpecError, parse_duration, spec_from_data
from fabbrica.core.safe_yaml import YamlError, load_yaml
from fabbrica.core.text import SLUG_PATTERN

MAX_TEMPLATE_BYTES = 64 * 1024
MAX_PARAMETERS = 64
MAX_TEXT = 1000  # characters in a text parameter's value
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
PARAMETER_NAME = r"^[a-z][a-z0-9_]{0,39}$"
Kind = Literal["int", "float", "text", "bool", "duration"]


class TemplateError(ValueError):
    """A template that cannot be used, or parameters it refuses; `field` names the first
    problem (`parameters.<name>` for a parameter)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class Parameter(BaseModel):
    """One parameter: its type, its default (None: required) and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Kind = "text"
    description: str = Field(default="", max_length=500)
    default: int | float | bool | str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=64)
    pattern: str | None = Field(default=None, max_length=200)  # a text's regular expression

    @property
    def required(self) -> bool:
        return self.default is None


class Template(BaseModel):
    """A template as `template.yaml` declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SLUG_PATTERN)
    description: str = Field(min_length=1, max_length=500)
    parameters: dict[str, Parameter] = Field(default_factory=dict, max_length=MAX_PARAMETERS)
    shared: tuple[Annotated[str, Field(pattern=SLUG_PATTERN)], ...] = Field(
        default=(), max_length=8
    )
    spec: dict[str, Any]

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        for name in value:
            if not re.match(PARAMETER_NAME, name):
                raise ValueError(f"{name!r} is not a parameter name (a-z, 0-9, _)")
        return value


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered template: the validated spec and the parameters' values it used."""

    spec: JobSpec
    values: dict[str, Any]


def parse_template(text: str | bytes, source: str = "template.yaml") -> Template:
    """Validate a template; TemplateError names the field. Its defaults must render a
    valid job spec (a template whose parameters all have defaults), and every placeholder
    must name a parameter."""
    try:
        data = load_yaml(text, max_bytes=MAX_TEMPLATE_BYTES, max_depth=16, max_nodes=5000)
    except YamlError as exc:
        raise TemplateError(exc.field, f"{source}: {exc.problem}") from exc
    if not isinstance(data, dict):
        raise TemplateError(None, f"{source} must be a mapping with name, description, spec")
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(*_first_error(exc, source)) from exc
    for name, parameter in template.parameters.items():
        if parameter.default is not None:
            try:
                _check_value(template, name, parameter.default)
            except TemplateError as exc:
                raise TemplateError(exc.field, f"{source}: the default: {exc.message}") from exc
    unknown = sorted(set(placeholders(template.spec)) - set(template.parameters))
    if unknown:
        raise TemplateError("spec", f"{source}: no parameter {unknown[0]!r}")
    return template


def placeholders(node: Any) -> list[str]:
    """The parameter names that strings of `node` refer to."""
    if isinstance(node, str):
        return _PLACEHOLDER.findall(node)
    if isinstance(node, dict):
        return [n for v in node.values() for n in placeholders(v)]
    if isinstance(node, list | tuple):
        return [n for v in node for n in placeholders(v)]
    return []


def validate_values(template: Template, given: dict[str, Any]) -> dict[str, Any]:
    """Every parameter's value: the given ones (text from `--set`, or typed), checked with
    their type and limits, and the defaults. TemplateError names the parameter."""
    for name in given:
        if name not in template.parameters:
            known = ", ".join(template.parameters) or "none"
            raise TemplateError(
                f"parameters.{name}", f"{template.name} has no parameter {name!r} (its: {known})"
            )
    values = {}
    for name, parameter in template.parameters.items():
        if name in given:
            values[name] = _check_value(template, name, given[name])
        elif parameter.required:
            raise TemplateError(f"parameters.{name}", "required (set it with --set name=value)")
        else:
            values[name] = _check_value(template, name, parameter.default)
    return values


def _check_value(template: Template, name: str, value: Any) -> Any:
    parameter = template.parameters[name]
    model = _model(parameter)
    try:
        return model.model_validate({"value": value}).value  # type: ignore[attr-defined]
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise TemplateError(f"parameters.{name}", f"{name}: {message}") from exc


def _model(parameter: Parameter) -> type[BaseModel]:
    """A one-field Pydantic model that checks a value of this parameter."""
    limits: dict[str, Any] = {}
    if parameter.type in ("int", "float"):
        limits = {"ge": parameter.min, "le": parameter.max}
    annotation: Any
    if parameter.type == "int":
        annotation = int
    elif parameter.type == "float":
        annotation = float
        limits["allow_inf_nan"] = False
    elif parameter.type == "bool":
        annotation = bool
    elif parameter.choices is not None:
        annotation = Literal[parameter.choices]
    else:
        annotation = str
        limits = {"max_length": MAX_TEXT, "pattern": parameter.pattern}
    validators = {}
    if parameter.type == "duration":
        validators["_duration"] = field_validator("value", mode="before")(_duration)
    elif annotation is str:
        validators["_one_line"] = field_validator("value")(_one_line)
    return create_model(
        "ParameterValue",
        __config__=ConfigDict(extra="forbid"),
        __validators__=validators,
        value=(annotation, Field(**limits)),
    )


def _one_line(cls: type, value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


def _duration(cls: type, value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("not a duration (examples: 30m, 2h, 1h30m)")
    return f"{parse_duration(value)}s"


def render(
    template: Template,
    given: dict[str, Any],
    *,
    project: str | None = None,
    datasets: tuple[str, ...] = (),
) -> Rendered:
    """The job spec the template makes with these parameters (and the project and data
    sets, when given); TemplateError names the parameter, or the spec's field when the
    values together make a spec that cannot run."""
    values = validate_values(template, given)
    data = _substitute(template.spec, values)
    if not isinstance(data, dict):
        raise TemplateError("spec", "a template's spec is a mapping")
    if project is not None:
        data["project"] = project
    if datasets:
        data["datasets"] = [*data.get("datasets", ()), *datasets]
    try:
        spec = spec_from_data(data)
    except SpecError as exc:
        names = _parameters_at(template.spec, exc.field)
        if names:  # the values together make a spec that cannot run: name who set it
            field = f"parameters.{names[0]}"
            raise TemplateError(field, f"{names[0]}: {exc.message}") from exc
        raise TemplateError(exc.field, f"the rendered spec: {exc.message}") from exc
    return Rendered(spec, values)


def _parameters_at(spec: dict[str, Any], field: str | None) -> list[str]:
    """The parameters that the spec's value at `field` (dotted) is made of."""
    node: Any = spec
    for part in (field or "").split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return []
    return placeholders(node)


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node.strip())
        if whole is not None:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: _as_text(values[m.group(1)]), node)
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_substitute(v, values) for v in node]
    return node


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_error(exc: ValidationError, source: str) -> tuple[str | None, str]:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"]) or None
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    return field, f"{source}: {message.removeprefix('Value error, ')}"


def describe(parameter: Parameter) -> str:
    """One line: type, default or required, limits."""
    facts: list[str] = [parameter.type]
    if parameter.choices:
        facts.append("one of " + ", ".join(parameter.choices))
    if parameter.min is not None:
        facts.append(f"at least {parameter.min:g}")
    if parameter.max is not None:
        facts.append(f"at most {parameter.max:g}")
    facts.append("required" if parameter.required else f"default {_as_text(parameter.default)}")
    return ", ".join(facts)
