"""Texts that tell a person why a job waits."""

from __future__ import annotations

import math

from fabbrica.sched.model import Job, Partition, Seconds


def after(seconds: Seconds) -> str:
    """A delay as people say it: now, in 40 s, in 12 min, in 2 h 10 min, in 3 days."""
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return f"in {math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"in {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"in {hours} h {minutes} min" if minutes else f"in {hours} h"
    return f"in {hours / 24:.1f} days"


def no_candidate_reason(job: Job, partitions: tuple[Partition, ...]) -> str:
    """Why no partition anywhere can ever run `job`, naming the first rule that excludes
    the last remaining partitions."""
    left = list(partitions)
    if job.factories is not None:
        left = [p for p in left if p.factory in job.factories]
        if not left:
            return "no factory of the allow-list is in the federation: " + ", ".join(
                sorted(job.factories)
            )
    if job.countries is not None:
        left = [p for p in left if p.country in job.countries]
        if not left:
            where = ", ".join(sorted(job.countries)) or "no country"
            if job.residency is not None:
                return f"the {job.residency} keeps it to {where}: no allowed factory is there"
            return "no allowed factory is in " + where
    if job.gpu_model is not None:
        left = [p for p in left if p.gpu_model == job.gpu_model]
        if not left:
            return f"no allowed factory offers {job.gpu_model} GPUs"
    if job.nodes > 1:
        left = [p for p in left if p.multi_node]
        if not left:
            return "no allowed factory runs multi-node jobs"
    per_node = math.ceil(job.gpus / job.nodes)
    return f"no allowed partition fits {job.gpus} GPUs on {job.nodes} node(s) ({per_node} per node)"


def residency_note(job: Job, factories: set[str]) -> str:
    """What a waiting job's reason adds when its data's residency narrows where it runs."""
    if job.residency is None:
        return ""
    return f"; the {job.residency} keeps it to {', '.join(sorted(factories))}"
