"""Billing units: how a partition turns GPUs x hours into charged GPU-hours.

Pure functions over plain values. Three rules cover what sites publish:

- ``per_gpu``: every allocated GPU counts, times a factor.
- ``whole_node``: nodes are charged whole (LUMI standard-g: a node of 8 GCDs is
  4 GPU-hours per hour, so factor 0.5 per GCD); a job on several nodes holds each of
  them whole, however few GPUs it uses on each.
- ``max_resource``: the largest of the GPU, CPU and memory shares counts (LUMI small-g:
  0.5 x max(ceil(cores/8), ceil(mem_GB/64), GCDs) per hour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The smallest amount of GPU-hours that can be requested, granted or topped up: one
# GPU-minute. Sites account grants in whole GPU-minutes (Slurm's GrpTRESMins=gres/gpu=N,
# see services.agents.desired_accounts), so a grant below it would be a site account of
# 0 minutes: an allocation nobody can use. Charges (GPUs x run time x factor) stay exact.
MIN_BILLABLE_GPU_HOURS = 1 / 60


def gpu_hours_problem(hours: float, *, maximum: float) -> str | None:
    """Why `hours` cannot be an amount of GPU-hours to request or grant, or None."""
    if not math.isfinite(hours):
        return "GPU-hours must be a finite number"
    if hours < MIN_BILLABLE_GPU_HOURS:
        return (
            f"GPU-hours must be at least {MIN_BILLABLE_GPU_HOURS:.4f} (one GPU-minute, the "
            f"smallest unit sites account); {hours:.12g} given"
        )
    if hours > maximum:
        return f"GPU-hours must be at most {maximum:,.0f}; {hours:.12g} given"
    return None


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: float = Field(default=1.0, gt=0, le=1000)


class PerGpu(_Rule):
    rule: Literal["per_gpu"]


class WholeNode(_Rule):
    rule: Literal["whole_node"]


class MaxResource(_Rule):
    rule: Literal["max_resource"]
    cpus_per_unit: int = Field(ge=1, le=10_000)
    memory_gb_per_unit: int = Field(ge=1, le=1_000_000)


BillingRule = Annotated[PerGpu | WholeNode | MaxResource, Field(discriminator="rule")]


@dataclass(frozen=True, slots=True)
class Holding:
    """What a job holds for the length of its run: `gpus` on all its `nodes` together."""

    gpus: int
    cpus: int = 0
    memory_gb: float = 0.0
    nodes: int = 1


def whole_node_gpus(gpus: int, nodes: int, gpus_per_node: int) -> int:
    """The GPUs of the whole nodes a job of `gpus` (in all) on `nodes` nodes is charged
    for: every node it runs on, and at least enough nodes for its GPUs (none without GPUs:
    a GPU partition's billing counts GPUs)."""
    if gpus <= 0:
        return 0
    return max(nodes, math.ceil(gpus / gpus_per_node)) * gpus_per_node


def billed_units(
    rule: PerGpu | WholeNode | MaxResource, gpus_per_node: int, held: Holding
) -> float:
    """Charged GPU-hours for one hour of `held` on a partition with `gpus_per_node`."""
    if held.gpus < 0 or held.cpus < 0 or held.memory_gb < 0 or held.nodes < 1:
        raise ValueError("a holding cannot have negative resources (or fewer than 1 node)")
    if isinstance(rule, PerGpu):
        units = float(held.gpus)
    elif isinstance(rule, WholeNode):
        units = float(whole_node_gpus(held.gpus, held.nodes, gpus_per_node))
    else:
        units = float(
            max(
                held.gpus,
                math.ceil(held.cpus / rule.cpus_per_unit),
                math.ceil(held.memory_gb / rule.memory_gb_per_unit),
            )
        )
    return units * rule.factor


def charged_gpu_hours(
    rule: PerGpu | WholeNode | MaxResource, gpus_per_node: int, held: Holding, hours: float
) -> float:
    """Charged GPU-hours for holding `held` for `hours` (wall-clock) on the partition."""
    if hours < 0:
        raise ValueError("hours cannot be negative")
    return billed_units(rule, gpus_per_node, held) * hours
