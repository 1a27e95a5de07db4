"""The job spec: a small YAML (or JSON) file that says what to run and on what.

```yaml
name: digits-classifier
project: FAB-AIF-2026PG11-0007      # or --project on the command line
resources: {gpus: 1, gpu_model: any, nodes: 1, cpus_per_gpu: 4, time_limit: 30m}
placement: {factories: [it4lia, jaif], countries: [IT, DE]}
workdir: .
setup: pip install -r requirements.txt
run: python train.py
env: {EPOCHS: "3"}
outputs: [outputs/]
datasets: [digits, scans@3]         # read-only at $FABBRICA_DATA/<name>; latest or @version
array: 1-100                        # optional: 100 tasks, FABBRICA_ARRAY_INDEX=1..100
checkpoint: {dir: checkpoints/, every: 10m, grace: 60s}  # kept across runs of the job
resume: true                        # lost or timed out: queued again, resumes
```

Parsing is pure (text in, a validated spec or a SpecError naming the field out).
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from fabbrica.core.arrays import parse_array
from fabbrica.core.datasets import parse_ref
from fabbrica.core.safe_yaml import YamlError, load_yaml
from fabbrica.core.text import SLUG_PATTERN

MAX_SPEC_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_NODES = 20_000  # a spec has a few dozen values; env at most 256
MAX_GPUS = 16_384
MAX_TIME_LIMIT_S = 14 * 86400
# NUL cannot be in a command, an environment value or a path; the other control characters
# (and bidi overrides, which make text read differently than it is) have no place in names,
# paths and ids. Scripts and environment values may hold tabs, newlines, escapes.
_NUL = re.compile("\x00")
_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_CLOCK = re.compile(r"^(?:(?P<d>\d+)-)?(?P<h>\d{1,3}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$")


class SpecError(ValueError):
    """A job spec that cannot run; `field` is the dotted path of the first problem."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_duration(text: str | int | float) -> int:
    """Seconds from `30m`, `2h`, `1h30m`, `1d`, `90s`, `01:30:00`, `2-00:00` or a number
    of minutes (as Slurm reads a bare number)."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("not a duration (examples: 30m, 2h, 1h30m, 1d)")
    if isinstance(text, int | float):
        if not math.isfinite(text) or abs(text) > MAX_TIME_LIMIT_S:  # int(inf) raises
            raise ValueError(f"at most {MAX_TIME_LIMIT_S // 86400} days")
        seconds = int(text * 60)
    else:
        value = text.strip().lower().replace(" ", "")
        parts = _duration_parts(value)
        if parts is None:
            raise ValueError(f"{text!r} is not a duration (examples: 30m, 2h, 1h30m, 1d)")
        seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    if seconds > MAX_TIME_LIMIT_S:
        raise ValueError(f"at most {MAX_TIME_LIMIT_S // 86400} days")
    return seconds


def _duration_parts(value: str) -> dict[str, int] | None:
    match = _DURATION.match(value) if value else None
    if match is None or not any(match.groupdict().values()):
        match = _CLOCK.match(value)
    if match is not None:
        return {k: int(v or 0) for k, v in match.groupdict().items()}
    if value.isdigit():
        return {"d": 0, "h": 0, "m": int(value), "s": 0}
    return None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]


class Resources(_Spec):
    gpus: int = Field(default=1, ge=1, le=MAX_GPUS)
    gpu_model: str | None = Field(default=None, max_length=64)
    nodes: int = Field(default=1, ge=1, le=1024)
    cpus_per_gpu: int = Field(default=4, ge=1, le=256)
    time_limit: int = Field(default=3600, description="seconds; written as 30m, 2h ...")

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _any(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "any"):
            return None
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("time_limit", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @field_serializer("time_limit", when_used="json")
    def _seconds(self, value: int) -> str:
        return f"{value}s"  # a bare number would read back as minutes

    @field_validator("nodes")
    @classmethod
    def _all_gpus(cls, value: int, info: ValidationInfo) -> int:
        gpus = info.data.get("gpus")  # GPUs per node: the job holds gpus x nodes
        if isinstance(gpus, int) and gpus * value > MAX_GPUS:
            raise ValueError(f"{gpus} GPUs on each of {value} nodes is more than {MAX_GPUS:,}")
        return value

    @property
    def total_gpus(self) -> int:
        """The GPUs the job holds on all its nodes (`gpus` is per node)."""
        return self.gpus * self.nodes


class Placement(_Spec):
    factories: tuple[Slug, ...] | None = Field(default=None, min_length=1, max_length=64)
    countries: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] | None = Field(
        default=None, min_length=1, max_length=64
    )

    @field_validator("countries", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [v.upper() if isinstance(v, str) else v for v in value]
        return value


class Checkpoint(_Spec):
    dir: str = Field(default="checkpoints/", min_length=1, max_length=1024)
    every: int = Field(default=600, description="seconds; written as 10m, 1h ...")
    grace: int = Field(default=60, description="seconds; written as 60s, 2m ...")

    @field_validator("every", "grace", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @field_serializer("every", "grace", when_used="json")
    def _seconds(self, value: int) -> str:
        return f"{value}s"  # a bare number would read back as minutes

    @field_validator("dir")
    @classmethod
    def _inside(cls, value: str) -> str:
        if not is_inside(value) or PurePosixPath(value).parts in ((), (".",)):
            raise ValueError(f"{value!r} is not a folder inside the job directory")
        return value


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class JobSpec(_Spec):
    name: Slug
    project: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    resources: Resources = Resources()
    placement: Placement = Placement()
    workdir: str = Field(default=".", max_length=1024)
    setup: str | None = Field(default=None, max_length=20_000)
    run: str = Field(min_length=1, max_length=20_000)
    env: dict[EnvName, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=256
    )
    outputs: tuple[Annotated[str, Field(min_length=1, max_length=1024)], ...] = ()
    datasets: tuple[Annotated[str, Field(max_length=80)], ...] = Field(
        default=(),
        max_length=32,
        description="data sets of the project the job reads: name (the latest) or name@version",
    )
    array: str | None = Field(
        default=None,
        max_length=1024,
        description="run as an array of tasks: 1-1000, 0-15:4, 1,3,7 (as sbatch --array)",
    )

    checkpoint: Checkpoint | None = None
    resume: bool = False

    @model_validator(mode="after")
    def _grace(self) -> JobSpec:
        if self.checkpoint is not None and self.checkpoint.grace >= self.resources.time_limit:
            raise ValueError(
                "checkpoint.grace must be shorter than resources.time_limit "
                f"({self.checkpoint.grace} s >= {self.resources.time_limit} s)"
            )
        return self

    @field_validator("array", mode="before")
    @classmethod
    def _array(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_array(value)  # ValueError says what is wrong
        return str(value).replace(" ", "")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [parse_ref(v).name for v in value]  # ValueError says what is wrong
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} named twice")
        return tuple(v.strip() for v in value)

    @property
    def array_indices(self) -> tuple[int, ...]:
        """The task indices; empty for a plain job."""
        return parse_array(self.array) if self.array is not None else ()

    @field_validator("outputs")
    @classmethod
    def _inside(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not is_inside(path):
                raise ValueError(f"{path!r} leaves the job directory")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else _scalar(v) for k, v in value.items()}
        return value

    @field_validator("setup", "run")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("contains a NUL character")
        return value


def _check_characters(node: Any, path: list[str]) -> None:
    """SpecError naming the first string (key or value) with a character it cannot hold."""
    if isinstance(node, str):
        field = ".".join(path) or None
        free = path in (["run"], ["setup"]) or (len(path) == 2 and path[0] == "env")
        if (_NUL if free else _SINGLE_LINE).search(node):
            what = "a NUL character" if "\x00" in node else "a control character"
            raise SpecError(field, f"contains {what}")
        return
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list | tuple):
        items = list(enumerate(node))
    else:
        return
    for key, value in items:
        name = str(key)
        if _SINGLE_LINE.search(name):
            raise SpecError(".".join(path) or None, f"the key {name!r} holds a control character")
        _check_characters(value, [*path, name])


def _scalar(value: Any) -> Any:
    """Numbers and booleans in `env` become strings, as a shell would see them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def is_inside(path: str) -> bool:
    """A relative path that stays inside the directory it is relative to."""
    if "\x00" in path or path.startswith(("/", "\\", "~")):
        return False
    parts = PurePosixPath(path.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def parse_job_spec(text: str | bytes, source: str = "job spec") -> JobSpec:
    """Validate a job spec (YAML or JSON text); SpecError names the field."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(None, f"{source} is {len(text):,} bytes; the limit is {MAX_SPEC_BYTES:,}")
    try:
        data = load_yaml(text, max_bytes=MAX_SPEC_BYTES, max_depth=MAX_DEPTH, max_nodes=MAX_NODES)
    except YamlError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line is not None else ""
        raise SpecError(exc.field, f"{source}{where}: {exc.problem}") from exc
    if not isinstance(data, dict):
        raise SpecError(None, f"{source} must be a mapping with at least `name` and `run`")
    return spec_from_data(data)


def spec_from_data(data: dict[str, Any]) -> JobSpec:
    """Validate parsed spec data; SpecError names the field (dotted) of the first problem."""
    _check_characters(data, [])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        if field is None and message.startswith("checkpoint.grace"):  # a rule across fields
            field = "checkpoint.grace"
        raise SpecError(field, message) from exc
