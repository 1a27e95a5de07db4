"""The Slurm testbed (`scripts/slurm-testbed up`): one-node clusters standing in for AI
factories, read from the mapping file the script writes.

When the testbed is missing or a cluster does not answer, the tests fail on CI and are
skipped elsewhere (`need_service`). They run as root: they add accounts with sacctmgr and
submit jobs as the site users with runuser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from fabbrica.backends.slurm.status import STATUS_ENV, SlurmJob, parse_sacct, sacct_argv
from tests.conftest import need_service

DEFAULT_DIR = "/var/lib/fabbrica-testbed"
COMMAND_TIMEOUT_S = 30.0
T = TypeVar("T")


def mapping_path() -> Path:
    return Path(os.environ.get("FABBRICA_TESTBED_DIR") or DEFAULT_DIR) / "clusters.json"


@dataclass(frozen=True, slots=True)
class Cluster:
    factory: str
    name: str
    slurm_conf: str
    partition: str
    gpu_model: str
    gpus: int  # on all its nodes
    nodes: tuple[str, ...] = ()

    def run(
        self, argv: Sequence[str], *, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A Slurm command on this cluster (as `user` through runuser, else as root)."""
        env = {**os.environ, **STATUS_ENV, "SLURM_CONF": self.slurm_conf}
        full = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        done = subprocess.run(
            full, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{full} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def sbatch(self, *args: str, user: str | None = None) -> str:
        """Submit; the Slurm job id."""
        out = self.run(["sbatch", "--parsable", *args], user=user).stdout.strip()
        return out.split(";")[0]

    def sacct(self, job_id: str) -> SlurmJob | None:
        jobs = parse_sacct(self.run(sacct_argv([job_id])).stdout)
        return jobs[0] if jobs else None

    def acct(self, *args: str) -> None:
        self.run(["sacctmgr", "--immediate", *args])


@dataclass(frozen=True, slots=True)
class SlurmTestbed:
    path: Path
    clusters: tuple[Cluster, ...]
    account: str
    users: tuple[str, ...]

    def cluster(self, name: str) -> Cluster:
        return next(c for c in self.clusters if c.name == name)


def load(path: Path) -> SlurmTestbed:
    data = json.loads(path.read_text())
    clusters = tuple(
        Cluster(
            factory=c["factory"],
            name=c["cluster"],
            slurm_conf=c["slurm_conf"],
            partition=c["partition"],
            gpu_model=c["gpu_model"],
            gpus=int(c["gpus"]),
            nodes=tuple(c.get("nodes") or [c["node"]]),
        )
        for c in data["clusters"]
    )
    users = tuple(data.get("users", ()))
    return SlurmTestbed(path, clusters, data.get("account", "testbed"), users)


@pytest.fixture(scope="session")
def testbed() -> SlurmTestbed:
    path = mapping_path()
    if not path.is_file():
        need_service(f"no Slurm testbed: {path} is missing (run: scripts/slurm-testbed up)")
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        need_service("no Slurm commands on PATH (run: scripts/slurm-testbed up)")
    if os.geteuid() != 0:
        need_service("the Slurm testbed tests run as root (sacctmgr, runuser)")
    bed = load(path)
    if not bed.clusters:
        need_service(f"{path} lists no clusters")
    for cluster in bed.clusters:
        try:
            ping = cluster.run(["scontrol", "ping"], check=False)
        except subprocess.TimeoutExpired:
            need_service(f"cluster {cluster.name}: scontrol ping did not answer")
        if "is UP" not in ping.stdout:
            said = (ping.stdout + ping.stderr).strip().splitlines() or ["nothing"]
            need_service(
                f"cluster {cluster.name} ({cluster.slurm_conf}) does not answer: "
                f"{said[0]} (run: scripts/slurm-testbed up)"
            )
    return bed


def poll(what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.25) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def user_dir() -> Iterator[Callable[[str], Path]]:
    """A fresh directory owned by the given user (mode 700), removed afterwards."""
    made: list[Path] = []

    def make(user: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"fabbrica-{user}-"))
        shutil.chown(path, user, user)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def temp_account(testbed: SlurmTestbed) -> Iterator[Callable[[Cluster], str]]:
    """Accounts made on a cluster for one test (with root as a user), deleted afterwards
    with their jobs cancelled."""
    made: list[tuple[Cluster, str]] = []

    def make(cluster: Cluster) -> str:
        name = unique("fabtest")
        cluster.acct("add", "account", name, f"cluster={cluster.name}")
        made.append((cluster, name))
        cluster.acct("add", "user", "root", f"account={name}", f"cluster={cluster.name}")
        return name

    yield make
    for cluster, name in made:
        cluster.run(["scancel", f"--account={name}"], check=False)
        cluster.run(["sacctmgr", "-i", "delete", "user", "root", f"account={name}"], check=False)
        cluster.run(["sacctmgr", "-i", "delete", "account", name], check=False)
