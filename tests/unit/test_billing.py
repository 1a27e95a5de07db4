from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabbrica.core.billing import Holding, MaxResource, PerGpu, WholeNode, charged_gpu_hours

LUMI_STANDARD_G = WholeNode(rule="whole_node", factor=0.5)
LUMI_SMALL_G = MaxResource(rule="max_resource", factor=0.5, cpus_per_unit=8, memory_gb_per_unit=64)


@pytest.mark.parametrize(
    ("rule", "gpus_per_node", "req", "hours", "expected"),
    [
        # LUMI standard-g: a whole node (8 GCDs) is 4 GPU-hours per node-hour
        (LUMI_STANDARD_G, 8, Holding(gpus=8), 1.0, 4.0),
        # one GCD still takes (and pays for) the whole node
        (LUMI_STANDARD_G, 8, Holding(gpus=1), 2.0, 8.0),
        (LUMI_STANDARD_G, 8, Holding(gpus=9), 1.0, 8.0),
        # several nodes: each is held whole, however few GCDs the job uses on it
        (LUMI_STANDARD_G, 8, Holding(gpus=2, nodes=2), 1.0, 8.0),
        (LUMI_STANDARD_G, 8, Holding(gpus=16, nodes=2), 1.5, 12.0),
        (LUMI_STANDARD_G, 8, Holding(gpus=9, nodes=3), 1.0, 12.0),
        # per GPU: GPUs per node x nodes, the nodes add nothing else
        (PerGpu(rule="per_gpu"), 4, Holding(gpus=2, nodes=2), 1.0, 2.0),
        (PerGpu(rule="per_gpu", factor=2.0), 4, Holding(gpus=8, nodes=2), 0.5, 8.0),
        # LUMI small-g: 0.5 x max(ceil(cores/8), ceil(mem/64), GCDs)
        (LUMI_SMALL_G, 8, Holding(gpus=1, cpus=7, memory_gb=60), 1.0, 0.5),
        (LUMI_SMALL_G, 8, Holding(gpus=1, cpus=32, memory_gb=60), 1.0, 2.0),
        (LUMI_SMALL_G, 8, Holding(gpus=2, cpus=8, memory_gb=300), 3.0, 7.5),
        (PerGpu(rule="per_gpu"), 4, Holding(gpus=3), 1.5, 4.5),
        (PerGpu(rule="per_gpu", factor=2.0), 4, Holding(gpus=1), 0.25, 0.5),
        (PerGpu(rule="per_gpu"), 4, Holding(gpus=0, cpus=16), 1.0, 0.0),
    ],
)
def test_charged_gpu_hours(
    rule: PerGpu | WholeNode | MaxResource,
    gpus_per_node: int,
    req: Holding,
    hours: float,
    expected: float,
) -> None:
    assert charged_gpu_hours(rule, gpus_per_node, req, hours) == pytest.approx(expected)


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="hours"):
        charged_gpu_hours(PerGpu(rule="per_gpu"), 4, Holding(gpus=1), -1)
    with pytest.raises(ValueError, match="negative"):
        charged_gpu_hours(PerGpu(rule="per_gpu"), 4, Holding(gpus=-1), 1)
    with pytest.raises(ValueError, match="1 node"):
        charged_gpu_hours(LUMI_STANDARD_G, 8, Holding(gpus=1, nodes=0), 1)


gpus = st.integers(min_value=0, max_value=4096)
per_node = st.integers(min_value=1, max_value=16)
hours = st.floats(min_value=0, max_value=10_000, allow_nan=False)
factor = st.floats(min_value=0.01, max_value=10, allow_nan=False)


@given(gpus, per_node, hours, factor)
def test_whole_node_never_charges_less_than_per_gpu(n: int, k: int, h: float, f: float) -> None:
    req = Holding(gpus=n)
    whole = charged_gpu_hours(WholeNode(rule="whole_node", factor=f), k, req, h)
    per = charged_gpu_hours(PerGpu(rule="per_gpu", factor=f), k, req, h)
    assert whole >= per - 1e-9
    assert whole - per <= (k - 1) * f * h + 1e-6  # at most one partly used node


@given(gpus, gpus, per_node, hours)
def test_more_gpus_never_cost_less(a: int, b: int, k: int, h: float) -> None:
    small, large = sorted((a, b))
    for rule in (PerGpu(rule="per_gpu"), LUMI_STANDARD_G, LUMI_SMALL_G):
        assert charged_gpu_hours(rule, k, Holding(gpus=small), h) <= charged_gpu_hours(
            rule, k, Holding(gpus=large), h
        )


@given(st.integers(min_value=1, max_value=16), st.integers(min_value=1, max_value=64), per_node,
       hours, factor)  # fmt: skip
def test_a_multi_node_job_is_charged_gpus_per_node_x_nodes(
    g: int, m: int, k: int, h: float, f: float
) -> None:
    """`g` GPUs on each of `m` nodes: per GPU, g x m x hours; whole nodes, every one of the
    m nodes (at least), whole."""
    held = Holding(gpus=g * m, nodes=m)
    per = charged_gpu_hours(PerGpu(rule="per_gpu", factor=f), k, held, h)
    assert per == pytest.approx(g * m * f * h)
    whole = charged_gpu_hours(WholeNode(rule="whole_node", factor=f), k, held, h)
    assert whole >= m * k * f * h - 1e-6
    if g <= k:  # as placed: a node has the GPUs the job asks of it
        assert whole == pytest.approx(m * k * f * h)
