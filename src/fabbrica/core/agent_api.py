"""The seam between a site agent and the central service, owned by the core.

An agent reports (`SyncReport`) and is answered (`SyncAnswer`); it asks which site
accounts its factory should hold (`SiteAccount`). `AgentApi` is what the agent loop needs
of the service: answered over HTTP (`fabbrica.agent.client.AgentClient`) or, for the
embedded factory, in process (`fabbrica.embedded.InProcessClient`). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fabbrica.core.executor import Capacity, LaunchRequest, RunStatus


class ApiUnavailable(RuntimeError):
    """The API did not answer, or answered with a server error: try again later."""


class ApiRefused(RuntimeError):
    """The API refused the request (4xx): retrying the same request will not help."""


@dataclass(frozen=True)
class SyncReport:
    """What an agent reports each round: its backend, capacity and every run it holds."""

    backend: str
    capabilities: Sequence[str]
    capacity: Sequence[Capacity]
    runs: Sequence[RunStatus]


@dataclass(frozen=True)
class SyncAnswer:
    """The service's answer to a sync: runs to launch and run tags to cancel."""

    factory: str
    lease_seconds: float
    launch: list[LaunchRequest]
    cancel: list[str]  # run tags
    # the longest this service holds a sync that asks to wait for work (0: it never does)
    wait_s: float = 0.0


@dataclass(frozen=True)
class SiteAccount:
    """A site account the factory should hold for one project (Slurm: an account with a
    GrpTRESMins limit and the members' site usernames as its users)."""

    account: str
    project: str
    state: str  # active | suspended
    gpu_minutes: int  # GrpTRESMins=gres/gpu=...: the grant, in GPU-minutes
    users: tuple[str, ...]  # site usernames of the members who have one


def site_account(project_id: str) -> str:
    """The site account of a project: its id in lower case (Slurm lowers account names)."""
    return project_id.lower()


class AgentApi(Protocol):
    """What the agent loop needs of the central service."""

    def sync(
        self,
        backend: str,
        capabilities: list[str],
        capacity: list[Capacity],
        runs: list[RunStatus],
        wait: float = 0.0,
    ) -> SyncAnswer:
        """Report and be answered; with `wait`, the answer may come up to `wait` seconds
        later, as soon as there is work for the agent (when the service holds syncs)."""
        ...

    def accounts(self) -> list[SiteAccount]: ...

    def download(self, api_path: str, dest: Path) -> Path: ...

    def send_log(self, job_id: int, offset: int, data: bytes) -> int: ...

    def send_checkpoint(
        self, job_id: int, run: int, *, offset: int, size: int, sha256: str, data: bytes
    ) -> tuple[int, bool]:
        """Part of a run's checkpoint tar; (bytes the server has, whether it is whole)."""
        ...

    def close(self) -> None: ...
