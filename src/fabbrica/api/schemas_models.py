"""Schemas of the model registry's Fabbrica API (/api/v1/models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    project: str
    job: int | None = Field(description="the job that produced it")
    run_id: str | None = Field(description="the MLflow run that logged it")
    source: str
    aliases: list[str]
    created_at: str


class DatasetReadPublic(BaseModel):
    name: str
    version: int
    files: int
    size_bytes: int
    license: str | None
    residency: str | None
    data_class: str


class ComputePublic(BaseModel):
    gpu_hours: float | None
    peak_flops: float | None = Field(description="the GPU model's peak FLOP/s (catalog)")
    flop: float | None = Field(description="GPU-hours x 3600 x peak FLOP/s: an upper bound")
    estimate: bool = True
    text: str


class LineagePublic(ModelVersionPublic):
    """A version and what made it."""

    job_name: str | None
    job_state: str | None
    spec: dict[str, Any] | None
    workdir_sha256: str | None
    factory: str | None
    gpu_model: str | None
    gpus: int | None
    gpu_hours: float | None = Field(description="charged to the job; null until it ends")
    compute: ComputePublic
    datasets: list[DatasetReadPublic]
    metrics: dict[str, float]
    params: dict[str, str]
    description: str
