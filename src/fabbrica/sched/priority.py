"""Job priority: fair share (a project's decayed usage against its share) plus age."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from operator import attrgetter

from fabbrica.sched.model import Job, Policy, Seconds


def fairshare_factors(
    projects: Iterable[str], shares: dict[str, float], usage: dict[str, float]
) -> dict[str, float]:
    """Slurm's classic factor 2^(-U/S): 1.0 for an idle project, 0.5 for one that used
    exactly its share, towards 0 for heavy users. U and S are normalised over `projects`."""
    names = set(projects)
    if not usage:
        return dict.fromkeys(names, 1.0)  # no usage: every factor is 1.0 (below)
    total_share = sum(shares.get(p, 1.0) for p in names) or 1.0
    total_usage = sum(max(usage.get(p, 0.0), 0.0) for p in names)
    factors = {}
    for project in names:
        if total_usage <= 0:
            factors[project] = 1.0
            continue
        share = max(shares.get(project, 1.0), 1e-9) / total_share
        used = max(usage.get(project, 0.0), 0.0) / total_usage
        factors[project] = 2.0 ** (-used / share)
    return factors


def priority(job: Job, now: Seconds, fairshare: float, policy: Policy) -> float:
    age = min(max(now - job.submitted_at, 0.0) / policy.age_saturation, 1.0)
    return policy.fairshare_weight * fairshare + policy.age_weight * age


def order(
    jobs: Iterable[Job],
    now: Seconds,
    factors: dict[str, float],
    policy: Policy,
    projects: set[str] | None = None,
) -> list[Job]:
    """Highest priority first; ties go to the earlier submission, then the id.
    `projects`: the jobs' projects, when the caller has them already."""
    queue = list(jobs)
    if projects is None:
        projects = set(map(_PROJECT, queue))
    if len({factors.get(p, 1.0) for p in projects}) <= 1 and policy.age_weight >= 0:
        # Priority then falls (weakly) with the submission time, so this is the same order,
        # found without computing a priority per job: what a long queue needs.
        return sorted(queue, key=_BY_SUBMISSION)
    # `priority` inlined (the same arithmetic in the same order, so the same floats): a
    # queue of 100,000 jobs would otherwise spend a function call per job on it. Sorting
    # on the priority alone (floats compare fast) and then each run of equal priorities
    # on (submission, id) gives the order of the (-priority, submission, id) key.
    fair = {p: policy.fairshare_weight * f for p, f in factors.items()}
    default_fair = policy.fairshare_weight * 1.0
    age_weight, saturation = policy.age_weight, policy.age_saturation
    keys = [
        -(
            fair.get(j.project, default_fair)
            + age_weight * min(max(now - j.submitted_at, 0.0) / saturation, 1.0)
        )
        for j in queue
    ]
    indices = sorted(range(len(queue)), key=keys.__getitem__)
    ranked = [queue[i] for i in indices]
    values = [keys[i] for i in indices]
    tied = [i for i, (a, b) in enumerate(pairwise(values)) if a == b]
    end = -1
    for i in tied:
        if i <= end:
            continue  # inside the run already sorted
        end = i + 1
        while end + 1 < len(values) and values[end + 1] == values[i]:
            end += 1
        ranked[i : end + 1] = sorted(ranked[i : end + 1], key=_BY_SUBMISSION)
    return ranked


_BY_SUBMISSION = attrgetter("submitted_at", "id")
_PROJECT = attrgetter("project")
