from __future__ import annotations

import datetime as dt

import pytest

from fabbrica.backends import Capability, Executor, InMemoryExecutor, LaunchRequest, RunState
from fabbrica.backends.memory import FakePartition

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def launch(run_tag: str, gpus: int, hours: float = 1, nodes: int = 1) -> LaunchRequest:
    return LaunchRequest(
        run_tag=run_tag,
        partition="gpu",
        gpus=gpus,
        nodes=nodes,
        time_limit=dt.timedelta(hours=hours),
        command="true",
    )


@pytest.fixture
def fake() -> InMemoryExecutor:
    return InMemoryExecutor([FakePartition("gpu", "h100", 4)], now=T0)


def test_it_is_an_executor(fake: InMemoryExecutor) -> None:
    assert isinstance(fake, Executor)


def test_runs_wait_for_free_gpus_and_usage_is_measured(fake: InMemoryExecutor) -> None:
    assert fake.submit(launch("a", 3)).state is RunState.RUNNING
    assert fake.submit(launch("b", 2)).state is RunState.PENDING
    assert fake.capacity()[0].free_gpus == 1
    fake.advance(dt.timedelta(minutes=30))
    fake.finish("a")
    a, b = fake.poll(["a", "b"])
    assert a.state is RunState.SUCCEEDED and a.exit_code == 0
    assert b.state is RunState.RUNNING and b.started_at == T0 + dt.timedelta(minutes=30)
    (usage,) = fake.usage(["a"])
    assert usage.elapsed == dt.timedelta(minutes=30) and usage.gpus == 3


def test_time_limit_ends_a_run_timed_out(fake: InMemoryExecutor) -> None:
    fake.submit(launch("a", 1, hours=1))
    fake.advance(dt.timedelta(hours=2))
    (status,) = fake.poll(["a"])
    assert status.state is RunState.TIMED_OUT
    assert status.ended_at == T0 + dt.timedelta(hours=1)


def test_submit_is_idempotent_and_cancel_frees_gpus(fake: InMemoryExecutor) -> None:
    fake.submit(launch("a", 4))
    fake.submit(launch("a", 4))
    assert len(fake.adopt()) == 1
    assert fake.cancel("a").state is RunState.CANCELLED
    assert fake.capacity()[0].free_gpus == 4
    assert fake.cancel("zzz").state is RunState.UNKNOWN
    assert fake.poll(["zzz"])[0].state is RunState.UNKNOWN


def test_declared_capabilities_are_enforced(fake: InMemoryExecutor) -> None:
    with pytest.raises(ValueError, match="single-node"):
        fake.submit(launch("a", 2, nodes=2))
    with pytest.raises(ValueError, match="cannot fit"):
        fake.submit(launch("b", 5))
    multi = InMemoryExecutor(
        [FakePartition("gpu", "h100", 8)], now=T0, capabilities=frozenset({Capability.MULTI_NODE})
    )
    assert multi.submit(launch("c", 8, nodes=2)).state is RunState.RUNNING
