"""Capacity planning: how many GPUs, where, to meet a target for a given demand.

A target is a p95 wait, a mean wait (seconds, at most) or a utilisation band (the GPU
utilisation at most the band's top; the band's bottom is reported against). Each
candidate is one way of adding GPUs: to one factory (its GPUs per node the step, in the
model asked for), to a new factory, or, without a base federation to add to, the whole
federation scaled (the default shares or the file's proportions; see `default_sizer`).

The search is the same for every candidate and decides from the results alone, never from
the order in which they come, so the answer does not depend on how many workers run it
(`parallel.runner`). Each candidate's search goes in rounds of two sizes, and goes on as
soon as its own two are run (the other candidates' searches need not have finished theirs):

- first: the base federation as it is (when adding to one; if it meets the target, the
  answer is 0 GPUs everywhere) and, for every candidate, a first guess g and 2g;
- while no size is known to meet the target: the next two doublings;
- then, between the largest size known to miss and the smallest known to meet, the two
  sizes at a third and two thirds of the gap (in whole steps), until the gap is at most
  one step or `tolerance` of the smaller meeting size.

The lower end is never simulated at 0 GPUs: adding to a federation starts from the base
run (a real answer: today's federation); scaling the whole federation starts from the
size at which the trace's GPU-hours over its whole span fill every GPU (a federation
smaller than that falls further behind the longer the trace runs: taken to miss).
It assumes that the measure does not rise when GPUs are added; that holds on these traces
but is not a theorem.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace

from fabbrica.sim import federation as fed
from fabbrica.sim.engine import QUEUE_DEPTH
from fabbrica.sim.metrics import Summary
from fabbrica.sim.parallel import Pool, Task
from fabbrica.sim.trace import TraceJob

MAX_DOUBLINGS = 20
MAX_ROUNDS = 60
WAIT_METRICS = ("p95_wait", "mean_wait")
UTILISATION = "utilisation"
GROWTH_SPREAD = 3600.0  # extra demand: copies shifted by under an hour, as --scale

Sizer = Callable[[float], fed.Federation]  # total GPUs wanted -> a federation
Key = tuple[tuple[str, int], ...]  # a federation's factories and sizes
_Asked = tuple[int, fed.Federation, Key]  # (amount, federation, key) of one size asked for
Progress = Callable[[str], None]


class PlanError(ValueError):
    """The question cannot be asked (or the search cannot start)."""


@dataclass(frozen=True)
class Target:
    metric: str  # p95_wait | mean_wait | utilisation
    limit: float  # at most this: seconds, or the utilisation band's top
    floor: float = 0.0  # utilisation: the band's bottom

    def value(self, summary: Summary) -> float:
        if self.metric == UTILISATION:
            return summary.utilisation
        return float(getattr(summary.overall, self.metric))

    def met(self, summary: Summary) -> bool:
        return self.value(summary) <= self.limit


@dataclass(frozen=True)
class Candidate:
    """One way of adding GPUs. `factory` "" scales the whole federation (then amounts are
    its total GPUs)."""

    factory: str
    gpu_model: str
    step: int  # amounts are whole multiples of this (GPUs per node)
    country: str = ""  # a new factory's country ("" for an existing factory)

    @property
    def label(self) -> str:
        if self is BASE:
            return "today"
        if not self.factory:
            return "the whole federation"
        return f"{self.factory} (new, {self.country})" if self.country else self.factory


BASE = Candidate("", "", 1, "")  # the base federation's probe (label: see `label`)


@dataclass(frozen=True)
class Probe:
    candidate: Candidate
    amount: int  # GPUs added (the federation's total when scaling the whole)
    federation: fed.Federation
    summary: Summary
    met: bool


@dataclass
class Answer:
    candidate: Candidate
    probe: Probe | None  # the fewest GPUs meeting the target; None: none found
    low: int  # the most GPUs known (or taken) to miss


@dataclass
class Plan:
    target: Target
    policy: str
    growth: float
    base: Probe | None  # the base federation as it is (when adding to one)
    answers: list[Answer]
    probes: list[Probe] = field(default_factory=list)  # every simulation, in order
    rounds: int = 0

    @property
    def best(self) -> Answer | None:
        """The candidate needing the fewest GPUs (ties: the first given)."""
        found = [a for a in self.answers if a.probe is not None]
        return min(found, key=lambda a: a.probe.amount if a.probe else 0, default=None)


def grown(jobs: Sequence[TraceJob], growth: float) -> tuple[TraceJob, ...]:
    """The demand times `growth`: whole copies shifted by k/n of an hour, and of the last
    partial copy an evenly spread share of the jobs. 1 or less: the jobs as they are
    (below 1, an evenly spread share)."""
    if growth == 1:
        return tuple(jobs)
    whole = math.floor(growth)
    part = growth - whole
    copies = whole + (1 if part > 1e-9 else 0)
    found = []
    for k in range(copies):
        shift = k * GROWTH_SPREAD / copies
        share = part if k == whole else 1.0
        for i, job in enumerate(jobs):
            if share < 1.0 and math.floor((i + 1) * share) == math.floor(i * share):
                continue
            found.append(TraceJob(job.submit + shift, job.duration, job.gpus, job.cluster))
    found.sort(key=lambda j: j.submit)
    return tuple(found)


def default_sizer(jobs: Sequence[TraceJob]) -> Sizer:
    return lambda total: fed.sized_total(jobs, total)


def file_sizer(base: fed.Federation, jobs: Sequence[TraceJob]) -> Sizer:
    minimum = fed.largest_per_site(base, jobs)
    return lambda total: base.scaled(total / base.gpus, minimum)


def falls_behind(jobs: Sequence[TraceJob]) -> int:
    """GPUs below which the trace's work over its span exceeds what they give."""
    if len(jobs) < 2:
        return 0
    span = jobs[-1].submit - jobs[0].submit
    work = sum(j.gpus * j.duration for j in jobs)
    return max(math.floor(work / span) - 1, 0) if span > 0 else 0


def with_added(base: fed.Federation, candidate: Candidate, amount: int) -> fed.Federation:
    """`base` with `amount` GPUs added as `candidate` says (amount 0: `base`)."""
    if amount <= 0:
        return base
    if candidate.country:
        site = fed.Site(
            candidate.factory,
            amount,
            (),
            candidate.country,
            gpu_model=candidate.gpu_model,
            gpus_per_node=candidate.step,
            basis="added by plan",
        )
        return fed.Federation((*base.sites, site))
    return fed.Federation(
        tuple(
            replace(s, gpus=s.gpus + amount, basis=f"{s.basis}, +{amount:,} {candidate.gpu_model}")
            if s.id == candidate.factory
            else s
            for s in base.sites
        )
    )


@dataclass
class _Search:
    candidate: Candidate
    build: Callable[[float], fed.Federation]
    low: int
    guess: int
    high: Probe | None = None
    doublings: int = 0
    done: bool = False
    rounds: int = 0
    asked: list[_Asked] = field(default_factory=list)  # the sizes of this round

    def up(self, amount: float) -> int:
        step = self.candidate.step
        return max(math.ceil(amount / step) * step, step)

    def wanted(self, tolerance: float) -> list[int]:
        if self.done:
            return []
        if self.high is None:
            return [self.up(self.guess), self.up(2 * self.guess)]
        high = self.high.amount
        if high - self.low <= max(self.candidate.step, tolerance * high):
            self.done = True
            return []
        gap = high - self.low
        points = sorted({self.up(self.low + gap / 3), self.up(self.low + 2 * gap / 3)})
        points = [p for p in points if self.low < p < high]
        if not points:
            self.done = True
        return points

    def learn(self, probes: list[Probe]) -> None:
        if self.high is None:
            met = [p for p in probes if p.met]
            if met:
                self.high = min(met, key=lambda p: p.amount)
                self.low = max([self.low, *(p.amount for p in probes if not p.met)])
                if self.low >= self.high.amount:  # the lower end taken to miss meets
                    self.low = 0
                return
            self.low = max(p.amount for p in probes)
            self.guess *= 4
            self.doublings += 2
            if self.doublings >= MAX_DOUBLINGS:
                self.done = True
            return
        for probe in sorted(probes, key=lambda p: p.amount):
            if probe.met and probe.amount < self.high.amount:
                self.high = probe
        self.low = max([self.low, *(p.amount for p in probes if not p.met)])


def plan(
    jobs: Sequence[TraceJob],
    pool: Pool,
    *,
    target: Target,
    policy: str,
    candidates: Sequence[Candidate],
    base: fed.Federation | None = None,
    sizer: Sizer | None = None,
    start: float = 0.0,
    growth: float = 1.0,
    tolerance: float = 0.01,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
    progress: Progress | None = None,
) -> Plan:
    """Search every candidate as the module docstring says. `jobs` are the replayed (grown)
    jobs; `base` the federation added to (None: `sizer` scales the whole, from `start`)."""
    if base is None and sizer is None:
        raise PlanError("no federation to add to and no way to size one")
    searches = []
    if base is not None:
        # a first guess: what brings the busiest week's offered load to 0.8
        load = fed.offered_load(jobs, base.gpus)
        guess = max(base.gpus * (load / 0.8 - 1), 0.05 * base.gpus)
        for candidate in candidates:
            build = functools.partial(with_added, base, candidate)
            searches.append(_Search(candidate, build, 0, math.ceil(max(guess, candidate.step))))
    else:
        assert sizer is not None
        low, start_at = falls_behind(jobs), math.ceil(max(start, 1))
        searches = [_Search(c, sizer, low, start_at) for c in candidates]
    found = Plan(target, policy, growth, None, [])
    cache: dict[Key, Summary] = {}
    inflight: dict[Key, Future[Summary]] = {}
    asker: dict[Key, tuple[Candidate, int, fed.Federation]] = {}

    def ask(candidate: Candidate, amount: int, federation: fed.Federation) -> _Asked:
        key = _key(federation)
        if key not in cache and key not in inflight:
            inflight[key] = pool.submit(Task(federation, policy, limit_factor, queue_depth))
            asker[key] = (candidate, amount, federation)
        return amount, federation, key

    def probe(candidate: Candidate, asked: _Asked) -> Probe:
        amount, federation, key = asked
        summary = cache[key]
        return Probe(candidate, amount, federation, summary, target.met(summary))

    first = ask(BASE, 0, base) if base is not None else None
    for search in searches:
        search.asked = [ask(search.candidate, a, search.build(a)) for a in search.wanted(tolerance)]
    while True:
        if first is not None and first[2] in cache and found.base is None:
            found.base = probe(BASE, first)
            if found.base.met:  # today meets the target: nothing to add anywhere
                for future in inflight.values():
                    future.cancel()
                found.probes = [found.base]
                found.answers = [
                    Answer(s.candidate, replace(found.base, candidate=s.candidate), 0)
                    for s in searches
                ]
                return found
        ready = [s for s in searches if s.asked and all(k in cache for _, _, k in s.asked)]
        for search in ready:
            search.learn([probe(search.candidate, asked) for asked in search.asked])
            search.rounds += 1
            wanted = search.wanted(tolerance) if search.rounds < MAX_ROUNDS else []
            search.asked = [ask(search.candidate, a, search.build(a)) for a in wanted]
        if ready:
            continue  # the next sizes may have been run already
        if not inflight:
            break
        done, _ = wait(list(inflight.values()), return_when=FIRST_COMPLETED)
        for key, future in list(inflight.items()):
            if future in done:
                cache[key] = future.result()
                del inflight[key]
                candidate, amount, federation = asker[key]
                found.probes.append(probe(candidate, (amount, federation, key)))
                if progress:
                    progress(
                        f"{candidate.label}: {amount:,} GPUs ({federation.gpus:,} in all): "
                        f"{target.metric} {target.value(cache[key]):,.2f}"
                    )
    order = {c: i for i, c in enumerate([BASE, *candidates])}
    found.probes.sort(key=lambda p: (order.get(p.candidate, 0), p.amount))
    found.rounds = max((s.rounds for s in searches), default=0)
    found.answers = [Answer(s.candidate, s.high, s.low) for s in searches]
    return found


def _key(federation: fed.Federation) -> Key:
    return tuple((s.id, s.gpus) for s in federation.sites)
