from __future__ import annotations

import datetime as dt
import threading

from fabbrica.services.control_loop import ControlLoop

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_tick_runs_every_step_and_survives_a_failing_one() -> None:
    calls: list[str] = []

    def good() -> int:
        calls.append("good")
        return 2

    def bad() -> int:
        calls.append("bad")
        raise RuntimeError("boom")

    loop = ControlLoop({"bad": bad, "good": good}, interval=1, clock=lambda: T0)
    status = loop.tick()
    loop.tick()
    assert calls == ["bad", "good", "bad", "good"]
    assert status.changes["good"] == 4
    assert status.last_error == "bad: boom"
    assert status.ticks == 2 and status.last_tick_at == T0


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
