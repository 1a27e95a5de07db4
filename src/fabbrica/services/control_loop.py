"""The control loop: one thread that runs the registered steps every interval.

A step is a callable that does one round of background work (dispatch, reconcile,
expire ...) and returns how many things it changed. The job and access issues add the
steps; on its own the loop only ticks and reports that it is alive.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("fabbrica.loop")

Step = Callable[[], int]


@dataclass
class LoopStatus:
    state: str = "not running"
    ticks: int = 0
    last_tick_at: dt.datetime | None = None
    last_error: str | None = None
    changes: dict[str, int] = field(default_factory=dict)


class ControlLoop:
    def __init__(
        self,
        steps: dict[str, Step],
        *,
        interval: float,
        clock: Callable[[], dt.datetime],
        on_status: Callable[[LoopStatus], None] | None = None,
    ) -> None:
        self.steps = steps
        self.interval = interval
        self.clock = clock
        self.status = LoopStatus()
        self._on_status = on_status
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop waiting: a stop, or work to do now
        self._thread: threading.Thread | None = None

    def tick(self) -> LoopStatus:
        """Run every step once; a failing step is logged and does not stop the others."""
        for name, step in self.steps.items():
            try:
                self.status.changes[name] = self.status.changes.get(name, 0) + step()
            except Exception as exc:  # a step's bug must not kill the loop
                log.exception("control loop step %s failed", name)
                self.status.last_error = f"{name}: {exc}"
        self.status.ticks += 1
        self.status.last_tick_at = self.clock()
        self._publish()
        return self.status

    def start(self) -> None:
        self._stop.clear()
        self.status.state = "running"
        self._publish()
        self._thread = threading.Thread(target=self._run, name="fabbrica-loop", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tick now rather than at the end of the interval (a job was submitted)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.status.state = "stopped"
        self._publish()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake during the tick still counts: cleared before it
            self.tick()
            self._wake.wait(self.interval)

    def _publish(self) -> None:
        if self._on_status is not None:
            self._on_status(self.status)
