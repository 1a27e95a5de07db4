"""The model registry's pure parts: names and `NAME@VERSION` references, a version's
lineage facts, the training compute estimate and the model card (Markdown)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fabbrica.core.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def check_model_name(name: str | None, field: str = "name") -> str:
    text = (name or "").strip()
    if not _NAME.match(text):
        raise InvalidInput(
            "a model name is 1 to 128 letters, digits, '.', '_' and '-', starting with a "
            "letter or digit",
            field,
        )
    return text


def check_alias(alias: str | None, field: str = "alias") -> str:
    text = (alias or "").strip()
    if not _ALIAS.match(text) or re.fullmatch(r"[vV]\d+", text) or text.lower() == "latest":
        raise InvalidInput(
            "an alias is 1 to 64 letters, digits, '_' and '-', starting with a letter or '_' "
            "(not 'latest' nor v<number>)",
            field,
        )
    return text


@dataclass(frozen=True)
class ModelRef:
    """`NAME@VERSION` or `NAME@ALIAS` (`NAME` alone: the latest version)."""

    name: str
    version: int | None = None
    alias: str | None = None


def parse_model_ref(text: str, field: str = "model") -> ModelRef:
    name, at, rest = text.strip().partition("@")
    name = check_model_name(name, field)
    if not at:
        return ModelRef(name)
    if rest.isdigit() and 0 < int(rest) < 2**31:
        return ModelRef(name, version=int(rest))
    if rest.isdigit():
        raise InvalidInput("a version is a number from 1", field)
    return ModelRef(name, alias=check_alias(rest, field))


def compute_estimate(gpu_hours: float | None, peak_flops: float | None) -> float | None:
    """Training compute in FLOP, an upper bound: GPU-hours x 3600 s x peak FLOP/s per GPU."""
    if gpu_hours is None or peak_flops is None:
        return None
    return gpu_hours * 3600.0 * peak_flops


@dataclass(frozen=True)
class DatasetRead:
    name: str
    version: int
    files: int
    size_bytes: int
    license: str | None
    residency: str | None
    data_class: str
    description: str


@dataclass(frozen=True)
class Lineage:
    """What made a model version, as its card states it."""

    name: str
    version: int
    project: str
    source: str
    run_id: str | None
    created_at: str  # ISO 8601
    job: int | None = None
    job_name: str | None = None
    job_state: str | None = None
    spec: dict[str, object] | None = None
    workdir_sha256: str | None = None
    factory: str | None = None
    gpu_model: str | None = None
    gpus: int | None = None
    gpu_hours: float | None = None  # charged; None while the job has not ended
    peak_flops: float | None = None
    compute_flop: float | None = None  # estimate
    datasets: tuple[DatasetRead, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""


def _or(value: object, missing: str = "not recorded") -> str:
    return missing if value is None or value == "" else str(value)


def _flop(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3e} FLOP"


def compute_text(lineage: Lineage) -> str:
    if lineage.compute_flop is not None and lineage.peak_flops is not None:
        return (
            f"about {_flop(lineage.compute_flop)} (estimate: {lineage.gpu_hours:.4g} GPU-hours x "
            f"{lineage.peak_flops / 1e12:.4g} TFLOP/s peak of {lineage.gpu_model}; an upper "
            "bound, not a measurement)"
        )
    if lineage.gpu_hours is None:
        return "unknown (no GPU-hours charged yet)"
    return (
        f"unknown (the catalog states no peak FLOP/s for GPU model {_or(lineage.gpu_model)}); "
        f"{lineage.gpu_hours:.4g} GPU-hours charged"
    )


def model_card(lineage: Lineage) -> str:
    """A model card in Markdown: the recorded facts, and the fields the provider fills in
    (EU AI Act, Annex XI/XII documentation of general-purpose models)."""
    ref = f"{lineage.name}@{lineage.version}"
    lines = [
        f"# Model card: {ref}",
        "",
        f"Project {lineage.project}; registered {lineage.created_at}.",
        "",
        "## Provenance (recorded by Fabbrica)",
        "",
        f"- Model: {lineage.name}, version {lineage.version}"
        + (f" (aliases: {', '.join(lineage.aliases)})" if lineage.aliases else ""),
        f"- Files: {_or(lineage.source)}",
        f"- Training job: {_or(lineage.job)}"
        + (f" ({lineage.job_name}, {lineage.job_state})" if lineage.job is not None else ""),
        f"- MLflow run: {_or(lineage.run_id)}",
        f"- Workdir sha256: {_or(lineage.workdir_sha256)}",
        f"- Factory: {_or(lineage.factory)}",
        f"- GPU model: {_or(lineage.gpu_model)}"
        + (f", {lineage.gpus} GPU(s)" if lineage.gpus is not None else ""),
        f"- GPU-hours charged: {_or(lineage.gpu_hours, 'none yet')}",
        "",
        "## Training data",
        "",
    ]
    if lineage.datasets:
        lines += ["| data set | version | files | bytes | licence | residency | class |"]
        lines += ["|---|---|---|---|---|---|---|"]
        lines += [
            f"| {d.name} | {d.version} | {d.files} | {d.size_bytes} | {_or(d.license, '-')} "
            f"| {_or(d.residency, '-')} | {d.data_class} |"
            for d in lineage.datasets
        ]
    else:
        lines += ["No Fabbrica data set recorded for the training job."]
    lines += ["", "## Metrics", ""]
    lines += [f"- {k}: {v:.6g}" for k, v in sorted(lineage.metrics.items())] or ["None logged."]
    if lineage.params:
        lines += ["", "## Parameters", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(lineage.params.items())]
    lines += ["", "## Compute", "", f"Training compute: {compute_text(lineage)}."]
    summary = "; ".join(f"{d.name}@{d.version}" for d in lineage.datasets) or "to be described"
    lines += [
        "",
        "## For the provider to complete (EU AI Act)",
        "",
        f"- Intended use: {_or(lineage.description, 'to be completed by the provider')}",
        "- Out-of-scope uses: to be completed by the provider",
        "- Limitations and known risks: to be completed by the provider",
        f"- Training data summary: {summary}; provenance, collection and curation to be "
        "completed by the provider",
        f"- Training compute: {compute_text(lineage)}",
        "- Energy consumption: to be completed by the provider",
        "- Evaluation: see Metrics; methodology to be completed by the provider",
        "",
    ]
    return "\n".join(lines)
