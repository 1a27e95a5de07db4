"""The planner's parts: what-if parsing, grown demand, the search (real engine, tiny traces)."""

from __future__ import annotations

import random

import pytest

from fabbrica.sim import federation as fed
from fabbrica.sim import whatif
from fabbrica.sim.parallel import Task, runner
from fabbrica.sim.plan import Candidate, Target, falls_behind, grown, plan, with_added
from fabbrica.sim.trace import TraceJob


def jobs(count: int = 120, seed: int = 5) -> tuple[TraceJob, ...]:
    rng = random.Random(seed)
    found = [
        TraceJob(rng.uniform(0, 86400), rng.uniform(1800, 4 * 3600), rng.choice([1, 2, 4]), c)
        for c in rng.choices(["a", "b"], k=count)
    ]
    return tuple(sorted(found, key=lambda j: j.submit))


def test_add_factory_and_grow_parse_and_apply() -> None:
    add = whatif.parse_add("giga-de:100000:GB300:de")
    assert add == whatif.AddFactory("giga-de", 100_000, "gb300", "DE")
    assert whatif.parse_new("g:h100:IT") == whatif.AddFactory("g", 1, "h100", "IT")
    assert whatif.parse_grow("it4lia=2.5") == whatif.Grow("it4lia", 2.5)
    base = [fed.Site("it4lia", 100, (), "IT", gpu_model="a100", gpus_per_node=4)]
    sites = whatif.apply(base, [add], [whatif.Grow("it4lia", 2.5)])
    assert [(s.id, s.gpus, s.gpu_model, s.estimated) for s in sites] == [
        ("it4lia", 252, "a100", False),  # 62.5 nodes of 4, rounded half up to whole nodes
        ("giga-de", 100_000, "gb300", False),
    ]
    for bad in ("a:1:h100", "a:-1:h100:DE", "a:1:h 100:DE", "a:1:h100:D"):
        with pytest.raises(ValueError):
            whatif.parse_add(bad)
    for bad in ("a", "a=0", "a=nan", "a=inf", "=2"):
        with pytest.raises(ValueError):
            whatif.parse_grow(bad)
    with pytest.raises(ValueError, match="no factory"):
        whatif.apply(base, [], [whatif.Grow("nowhere", 2)])


def test_an_unpublished_factory_is_an_estimate_the_size_of_the_smallest() -> None:
    assert whatif.unpublished_size([0, 500, 2000]) == 500
    site = whatif.factory_site("new", "PL", [], estimated=False, fallback=502)
    assert (site.gpus, site.estimated, site.gpu_model) == (504, True, "unknown")
    known = whatif.factory_site(
        "old", "IT", [("a100", 4, 10), ("h100", 8, 20)], estimated=False, fallback=1
    )
    assert (known.gpus, known.gpu_model, known.gpus_per_node) == (200, "h100", 8)


def test_grown_demand_keeps_the_span_and_multiplies_the_jobs() -> None:
    original = jobs(100)
    for growth, count in ((1.0, 100), (2.0, 200), (2.5, 250), (0.5, 50)):
        more = grown(original, growth)
        assert len(more) == count
        assert more[-1].submit - more[0].submit < original[-1].submit + 3600
        assert [j.submit for j in more] == sorted(j.submit for j in more)


def test_the_search_adds_the_fewest_gpus_and_its_neighbour_misses() -> None:
    replayed = jobs()
    base = fed.assign([fed.Site("x", 4, ("a",)), fed.Site("y", 4, ("b",))], replayed, "test")
    target = Target("mean_wait", 600.0)
    assert falls_behind(replayed) < base.gpus * 10
    candidates = [Candidate("x", "gpu", 1), Candidate("new", "h100", 1, "DE")]
    with runner(replayed) as pool:
        found = plan(
            replayed, pool, target=target, policy="federated", candidates=candidates, base=base
        )
        assert found.base is not None and not found.base.met
        for answer in found.answers:
            assert answer.probe is not None and answer.probe.met
            amount = answer.probe.amount
            assert amount - answer.low <= max(1, 0.01 * amount)  # known to 1 % or one GPU
            [fewer] = pool.map(
                [Task(with_added(base, answer.candidate, answer.low), "federated", 1, 500)]
            )
            assert not target.met(fewer)
        assert 0 not in {p.federation.gpus for p in found.probes}


def test_an_outage_may_start_months_into_a_trace() -> None:
    from fabbrica.sim.outage import parse

    outage = parse("ee9e8c@46d+1d")
    assert (outage.start, outage.duration) == (46 * 86400.0, 86400.0)
    assert parse("a@1.5h+90m").start == parse("a@PT1H30M+01:30:00").start == 5400.0
