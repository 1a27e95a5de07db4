"""Running independent simulations at once: in this process, in worker processes
(`concurrent.futures`), or on a Dask cluster (the optional `dask` extra).

A task is one policy on one federation; its answer is the run's `Summary`, as a
`concurrent.futures.Future`. The jobs are
sent once per worker (a process pool's initializer; on Dask, scattered to every worker),
not once per task. A search that decides from the answers alone, never from the order in
which they come, takes the same steps with any number of workers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
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


class Pool:
    """Where tasks run: `submit` gives a future of the task's summary."""

    def __init__(self, submit: Callable[[Task], Future[Summary]]) -> None:
        self.submit = submit

    def map(self, tasks: Sequence[Task]) -> list[Summary]:
        """The summaries of `tasks`, in their order."""
        return [f.result() for f in [self.submit(t) for t in tasks]]


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


def install(jobs: tuple[TraceJob, ...]) -> None:
    """A worker process's initializer: its copy of the jobs."""
    global _JOBS
    _JOBS = jobs


def _here(jobs: Sequence[TraceJob]) -> Callable[[Task], Future[Summary]]:
    def submit(task: Task) -> Future[Summary]:
        future: Future[Summary] = Future()
        future.set_result(evaluate(task, jobs))
        return future

    return submit


@contextmanager
def runner(
    jobs: Sequence[TraceJob], *, workers: int = 1, dask: str | None = None
) -> Iterator[Pool]:
    """Where tasks run: on the Dask cluster at `dask`, else in `workers` processes, else
    (one worker) here, each task as it is submitted."""
    replayed = tuple(jobs)
    if dask:
        with _dask_pool(replayed, dask) as pool:
            yield pool
        return
    if workers <= 1:
        yield Pool(_here(replayed))
        return
    with ProcessPoolExecutor(workers, initializer=install, initargs=(replayed,)) as executor:
        yield Pool(lambda task: executor.submit(evaluate, task))


@contextmanager
def _dask_pool(jobs: tuple[TraceJob, ...], address: str) -> Iterator[Pool]:
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
        executor = client.get_executor(pure=False)  # concurrent.futures futures
        yield Pool(lambda task: executor.submit(evaluate, task, shared))
    finally:
        client.close()
