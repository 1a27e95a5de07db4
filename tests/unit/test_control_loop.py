from __future__ import annotations

import datetime as dt
import threading
import time

from fabbrica.services.control_loop import ControlLoop, LoopStatus

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=5)


def seen(status: LoopStatus) -> tuple[int, dict[str, int], str | None, dt.datetime | None]:
    """The status's values at this moment (tick() returns the same object each time)."""
    return status.ticks, dict(status.changes), status.last_error, status.last_tick_at


def test_tick_runs_every_step_and_survives_a_failing_one() -> None:
    calls: list[str] = []
    now = [T0]
    published: list[tuple[int, dict[str, int], str | None, dt.datetime | None]] = []

    def good() -> int:
        calls.append("good")
        return 2

    def bad() -> int:
        calls.append("bad")
        raise RuntimeError("boom")

    loop = ControlLoop(
        {"bad": bad, "good": good},
        interval=1,
        clock=lambda: now[0],
        on_status=lambda s: published.append(seen(s)),
    )
    first = seen(loop.tick())
    assert calls == ["bad", "good"]  # the step after the failing one still ran
    assert first == (1, {"good": 2}, "bad: boom", T0)
    now[0] = T1
    second = seen(loop.tick())
    assert calls == ["bad", "good", "bad", "good"]
    assert second == (2, {"good": 4}, "bad: boom", T1)  # changes add up; the tick's time
    assert published == [first, second]  # each tick publishes what it did


def test_thread_starts_ticks_and_stops() -> None:
    ticked = threading.Event()
    states: list[str] = []

    def step() -> int:
        ticked.set()
        return 0

    loop = ControlLoop(
        {"s": step}, interval=0.01, clock=lambda: T0, on_status=lambda s: states.append(s.state)
    )
    loop.start()
    assert ticked.wait(5)
    loop.stop()
    assert states[0] == "running" and states[-1] == "stopped"
    assert loop.status.ticks >= 1


def test_a_wake_ticks_at_once_and_a_stop_ends_the_wait() -> None:
    ticks: list[float] = []
    second = threading.Event()

    def step() -> int:
        ticks.append(time.monotonic())
        if len(ticks) == 2:
            second.set()
        return 0

    loop = ControlLoop({"s": step}, interval=3600, clock=lambda: T0)  # an hour between ticks
    loop.start()
    while not ticks:
        time.sleep(0.01)
    loop.wake()  # a job was submitted
    assert second.wait(5)
    began = time.monotonic()
    loop.stop()
    assert time.monotonic() - began < 5 and len(ticks) == 2
