"""An in-memory executor for unit tests: no processes, time moves only when told."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from fabbrica.core.executor import (
    Capability,
    Capacity,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)


@dataclass
class _Run:
    request: LaunchRequest
    status: RunStatus


@dataclass(frozen=True, slots=True)
class FakePartition:
    name: str
    gpu_model: str
    total_gpus: int


class InMemoryExecutor:
    """Runs start at once if GPUs are free, else wait; tests end them with `finish`."""

    def __init__(
        self,
        partitions: list[FakePartition],
        *,
        now: dt.datetime,
        capabilities: frozenset[Capability] = frozenset(),
        name: str = "memory",
    ) -> None:
        self.name = name
        self._partitions = {p.name: p for p in partitions}
        self._caps = capabilities
        self._now = now
        self._runs: dict[str, _Run] = {}

    # --- test controls ------------------------------------------------------------------

    def advance(self, delta: dt.timedelta) -> None:
        """Move the fake clock; runs past their time limit end TIMED_OUT."""
        self._now += delta
        for run in self._runs.values():
            started = run.status.started_at
            limit = run.request.time_limit
            running = run.status.state is RunState.RUNNING and started is not None
            if running and started is not None and self._now - started >= limit:
                self._end(run, RunState.TIMED_OUT, None, started + limit)
        self._start_waiting()

    def finish(self, run_tag: str, exit_code: int = 0) -> RunStatus:
        run = self._runs[run_tag]
        if run.status.state is not RunState.RUNNING:
            raise ValueError(f"{run_tag} is {run.status.state}, not running")
        state = RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED
        self._end(run, state, exit_code, self._now)
        self._start_waiting()
        return run.status

    # --- Executor -----------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        return self._caps

    def capacity(self) -> list[Capacity]:
        return [
            Capacity(p.name, p.gpu_model, p.total_gpus, p.total_gpus - self._used(p.name))
            for p in self._partitions.values()
        ]

    def submit(self, request: LaunchRequest) -> RunStatus:
        if request.run_tag in self._runs:
            return self._runs[request.run_tag].status
        partition = self._partitions.get(request.partition)
        if partition is None:
            raise ValueError(f"unknown partition {request.partition!r}")
        if request.gpus < 0 or request.gpus > partition.total_gpus:
            raise ValueError(f"{request.gpus} GPUs cannot fit in {partition.name}")
        if request.nodes > 1 and Capability.MULTI_NODE not in self._caps:
            raise ValueError("this executor runs single-node jobs only")
        self._runs[request.run_tag] = _Run(request, RunStatus(request.run_tag, RunState.PENDING))
        self._start_waiting()
        return self._runs[request.run_tag].status

    def poll(self, run_tags: list[str]) -> list[RunStatus]:
        return [
            self._runs[j].status if j in self._runs else RunStatus(j, RunState.UNKNOWN)
            for j in run_tags
        ]

    def cancel(self, run_tag: str) -> RunStatus:
        run = self._runs.get(run_tag)
        if run is None:
            return RunStatus(run_tag, RunState.UNKNOWN)
        if not run.status.state.finished:
            self._end(run, RunState.CANCELLED, None, self._now)
            self._start_waiting()
        return run.status

    def usage(self, run_tags: list[str]) -> list[UsageSample]:
        samples = []
        for run_tag in run_tags:
            run = self._runs.get(run_tag)
            if run is None or run.status.started_at is None:
                continue
            end = run.status.ended_at or self._now
            samples.append(UsageSample(run_tag, run.request.gpus, end - run.status.started_at))
        return samples

    def adopt(self) -> list[RunStatus]:
        return [run.status for run in self._runs.values()]

    # --- internals ----------------------------------------------------------------------

    def _used(self, partition: str) -> int:
        return sum(
            r.request.gpus
            for r in self._runs.values()
            if r.request.partition == partition and r.status.state is RunState.RUNNING
        )

    def _start_waiting(self) -> None:
        for run in self._runs.values():  # submission order; any run that fits starts
            if run.status.state is not RunState.PENDING:
                continue
            partition = self._partitions[run.request.partition]
            if self._used(partition.name) + run.request.gpus <= partition.total_gpus:
                run.status = replace(run.status, state=RunState.RUNNING, started_at=self._now)

    @staticmethod
    def _end(run: _Run, state: RunState, exit_code: int | None, at: dt.datetime) -> None:
        run.status = replace(run.status, state=state, exit_code=exit_code, ended_at=at)
