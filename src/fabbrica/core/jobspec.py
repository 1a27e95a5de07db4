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
```

Parsing is pure (text in, a validated spec or a SpecError naming the field out).
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SPEC_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_GPUS = 16_384
MAX_TIME_LIMIT_S = 14 * 86400
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


Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


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
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(None, f"{source} is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except RecursionError as exc:
        raise SpecError(None, f"{source} is nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(None, f"{source} is not valid YAML{where}") from exc
    if not isinstance(data, dict):
        raise SpecError(None, f"{source} must be a mapping with at least `name` and `run`")
    if _depth(data) > MAX_DEPTH:
        raise SpecError(None, f"{source} is nested deeper than {MAX_DEPTH} levels")
    return spec_from_data(data)


def spec_from_data(data: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        raise SpecError(field, message) from exc


def _depth(node: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level
