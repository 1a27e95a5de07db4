"""Executors: the one seam between Fabbrica and the systems that run jobs.

`Executor` is the protocol every backend implements (local, slurm, more later);
`InMemoryExecutor` is the fake that unit tests of the core drive by hand.
"""

from fabbrica.backends.memory import InMemoryExecutor
from fabbrica.core.executor import (
    Capability,
    Capacity,
    Executor,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)

__all__ = [
    "Capability",
    "Capacity",
    "Executor",
    "InMemoryExecutor",
    "LaunchRequest",
    "RunState",
    "RunStatus",
    "UsageSample",
]
