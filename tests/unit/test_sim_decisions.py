"""The replay's decisions, pinned: every job's start time and factory on the shipped sample
of the Philly trace (tests/data/traces/philly-sample.csv), for every policy, as digests.

Speed work on the engine and the core must change no decision: a digest that moves means a
job started at another time or on another factory. The digests were taken from the code
before the stateful replay (2026-12-01); change one only for a change of behaviour that is
meant, and say so in the CHANGELOG.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fabbrica.sim.engine import POLICIES, Hardware, Outage, Run, simulate
from fabbrica.sim.federation import Federation, Site, sized_for_load
from fabbrica.sim.trace import TraceJob, load

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "traces" / "philly-sample.csv"

# (load, policy, variant) -> the first 16 hex digits of the decisions' SHA-256
PINNED: dict[tuple[float, str, str], str] = {
    (0.9, "site-fifo", "plain"): "47be9713fd501127",
    (0.9, "site-fifo", "no-nodes"): "9b04f5c374320b5e",
    (0.9, "site-fifo", "depth-20"): "47be9713fd501127",
    (0.9, "site-fifo", "outage"): "28d9230f33ebade8",
    (0.9, "site-backfill", "plain"): "fed947f29fd13969",
    (0.9, "site-backfill", "no-nodes"): "fed947f29fd13969",
    (0.9, "site-backfill", "depth-20"): "fed947f29fd13969",
    (0.9, "site-backfill", "outage"): "66c5b5b1f3900277",
    (0.9, "naive", "plain"): "bd19425e96fb5841",
    (0.9, "naive", "no-nodes"): "ec388f0b3e6c5ada",
    (0.9, "naive", "depth-20"): "bd19425e96fb5841",
    (0.9, "naive", "outage"): "5e8d965a3ee5fbca",
    (0.9, "federated", "plain"): "6f38a1ae66549e60",
    (0.9, "federated", "no-nodes"): "d6e59204b554156d",
    (0.9, "federated", "depth-20"): "cfa7aa8db3915488",
    (0.9, "federated", "outage"): "39dbf5c85f12f1b3",
    (0.9, "federated-single", "plain"): "edad9ca30c24e98d",
    (0.9, "federated-single", "no-nodes"): "72a612283694bbc3",
    (0.9, "federated-single", "depth-20"): "0646f12eaf6cfcbe",
    (0.9, "federated-single", "outage"): "c5cd4edef6355c03",
    (0.9, "pooled", "plain"): "30611fa1e2bdc7bc",
    (0.9, "pooled", "no-nodes"): "196e8512d49ffa5e",
    (0.9, "pooled", "depth-20"): "be7f564531a8ae93",
    (0.9, "pooled", "outage"): "e9fb6542e6a206b0",
    (1.2, "site-fifo", "plain"): "1bc64325e226e807",
    (1.2, "site-fifo", "no-nodes"): "1bc64325e226e807",
    (1.2, "site-fifo", "depth-20"): "1bc64325e226e807",
    (1.2, "site-fifo", "outage"): "84aa677b6fc942c0",
    (1.2, "site-backfill", "plain"): "6bfc824d589473ca",
    (1.2, "site-backfill", "no-nodes"): "6bfc824d589473ca",
    (1.2, "site-backfill", "depth-20"): "6bfc824d589473ca",
    (1.2, "site-backfill", "outage"): "108640b9898fb8f9",
    (1.2, "naive", "plain"): "17eca7822d596593",
    (1.2, "naive", "no-nodes"): "2a9449f41a49b2ef",
    (1.2, "naive", "depth-20"): "75f4e4d503ee8aa7",
    (1.2, "naive", "outage"): "d50810fa2bcc8e5d",
    (1.2, "federated", "plain"): "1e00982b639aff9d",
    (1.2, "federated", "no-nodes"): "7098ab7f67f50f7f",
    (1.2, "federated", "depth-20"): "9675688835df0e00",
    (1.2, "federated", "outage"): "81b35bf46794f251",
    (1.2, "federated-single", "plain"): "fcd4fdd93be4a11f",
    (1.2, "federated-single", "no-nodes"): "d016ec04bf9e8a1a",
    (1.2, "federated-single", "depth-20"): "8501af23981c5190",
    (1.2, "federated-single", "outage"): "519266a0cc3b126b",
    (1.2, "pooled", "plain"): "48fd0d19e4f623b5",
    (1.2, "pooled", "no-nodes"): "90ec2b9e07f213a6",
    (1.2, "pooled", "depth-20"): "cd651a7ec8121b17",
    (1.2, "pooled", "outage"): "2e022876b6295701",
}


def digest(run: Run) -> str:
    h = hashlib.sha256()
    for start, factory in zip(run.starts, run.factories, strict=True):
        h.update(f"{start!r}:{factory};".encode())
    return h.hexdigest()[:16]


def replay(load_: float, policy: str, variant: str) -> Run:
    jobs = load(SAMPLE).jobs
    federation = sized_for_load(jobs, load_)
    if variant == "plain":
        return simulate(jobs, federation, policy)
    if variant == "no-nodes":
        return simulate(jobs, federation, policy, pack_nodes=False)
    if variant == "depth-20":
        return simulate(jobs, federation, policy, queue_depth=20)
    busiest = max(federation.sites, key=lambda s: (s.gpus, s.id)).id
    return simulate(jobs, federation, policy, outages=[Outage(busiest, 100 * 3600.0, 86400.0)])


CASES = [
    (load_, policy, variant)
    for load_ in (0.9, 1.2)
    for policy in POLICIES
    for variant in ("plain", "no-nodes", "depth-20", "outage")
]


@pytest.mark.parametrize(("load_", "policy", "variant"), CASES)
def test_the_decisions_on_the_sample_are_the_pinned_ones(
    load_: float, policy: str, variant: str
) -> None:
    run = replay(load_, policy, variant)
    assert min(run.starts) >= 0
    assert digest(run) == PINNED[(load_, policy, variant)]


def test_the_digest_sees_one_start_moved() -> None:
    run = replay(0.9, "federated", "plain")
    moved = Run(
        run.policy, (run.starts[0] + 1.0, *run.starts[1:]), run.factories, run.capacity,
        run.passes, run.events, run.wall_seconds,
    )  # fmt: skip
    assert digest(moved) != digest(run)


def test_one_tuple_of_jobs_replayed_by_every_policy_in_turn_decides_as_each_alone() -> None:
    """The policies of a point replay the same jobs one after another (the engine then
    makes the core's jobs once): each decides as it does alone."""
    jobs = load(SAMPLE).jobs
    federation = sized_for_load(jobs, 1.2)
    for policy in (*POLICIES, *reversed(POLICIES)):
        assert digest(simulate(jobs, federation, policy)) == PINNED[(1.2, policy, "plain")]


def test_pins_hold_after_pooled_and_pooled_drops_them_after_the_others() -> None:
    jobs = tuple(
        TraceJob(60.0 * i, 3600.0, 1 + i % 4, "xy"[i % 2], "gb300" if i % 3 == 0 else None)
        for i in range(60)
    )
    federation = Federation((Site("x", 16, ("x",)), Site("y", 16, ("y",))))
    hardware = {"x": Hardware("h100", 8, 1.0), "y": Hardware("gb300", 8, 1.0)}
    alone = {
        policy: digest(simulate(tuple(jobs), federation, policy, hardware=hardware))
        for policy in ("federated", "pooled")
    }
    in_turn = [
        (policy, digest(simulate(jobs, federation, policy, hardware=hardware)))
        for policy in ("federated", "pooled", "federated", "pooled")
    ]
    assert alone["federated"] != alone["pooled"]
    assert all(d == alone[policy] for policy, d in in_turn)
