"""Running independent simulations at once: in this process, in worker processes
(`concurrent.futures`), or on a Dask cluster (the optional `dask` extra).

A task is one policy on one federation; its answer is the run's `Summary`. The jobs are
sent once per worker (a process pool's initializer; on Dask, scattered to every worker),
not once per task. The order of the answers is the order of the tasks, whoever ran them,
so a search built on them takes the same steps with any number of workers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fabbrica.sim.engine import simulate
from fabbrica.sim.federation import Federation
from fabbrica.sim.metrics import Summary, summarise
from fabbrica.sim.trace import TraceJob


class ClusterUnavailable(RuntimeError):
    """Dask is not installed, or its scheduler cannot be reached."""


@dataclass(frozen=True)
class Task:
    federation: Federation
    policy: str
    limit_factor: float
    queue_depth: int


Runner = Callable[[Sequence[Task]], list[Summary]]

_JOBS: tuple[TraceJob, ...] = ()  # a worker process's copy of the jobs


def evaluate(task: Task, jobs: Sequence[TraceJob] | None = None) -> Summary:
    """One task: the run's summary (`jobs`: the worker's own copy when None)."""
    replayed = _JOBS if jobs is None else jobs
    run = simulate(
        replayed,
        task.federation,
        task.policy,
        limit_factor=task.limit_factor,
        queue_depth=task.queue_depth,
    )
    return summarise(replayed, run)


def _install(jobs: tuple[TraceJob, ...]) -> None:
    global _JOBS
    _JOBS = jobs


@contextmanager
def runner(
    jobs: Sequence[TraceJob], *, workers: int = 1, dask: str | None = None
) -> Iterator[Runner]:
    """A function running a list of tasks: on the Dask cluster at `dask`, else in
    `workers` processes, else (one worker) here."""
    replayed = tuple(jobs)
    if dask:
        with _dask_runner(replayed, dask) as run:
            yield run
        return
    if workers <= 1:
        yield lambda tasks: [evaluate(t, replayed) for t in tasks]
        return
    with ProcessPoolExecutor(workers, initializer=_install, initargs=(replayed,)) as pool:
        yield lambda tasks: list(pool.map(evaluate, tasks))


@contextmanager
def _dask_runner(jobs: tuple[TraceJob, ...], address: str) -> Iterator[Runner]:
    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError as exc:
        raise ClusterUnavailable(
            "--dask needs Dask: install the extra, e.g. pip install 'fabbrica[dask]'"
        ) from exc
    try:
        client = distributed.Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterUnavailable(f"--dask: cannot reach the scheduler at {address}: {exc}") from exc
    try:
        [shared] = client.scatter([jobs], broadcast=True)

        def run(tasks: Sequence[Task]) -> list[Summary]:
            futures = [client.submit(evaluate, t, shared, pure=False) for t in tasks]
            return list(client.gather(futures))

        yield run
    finally:
        client.close()
