"""The warning before a time limit reaches every process of a job, on one node and on two.

Slurm sends `--signal=B:USR1@<grace>` to the batch shell alone. Here the same signal is sent
at once with `scancel --signal=USR1 --batch` (what slurmctld does at the grace, without
waiting for a time limit: tests/slurm/test_time_limit.py waits for a real one). The batch
script Fabbrica writes must pass it on: the job's shell (which traps it) and the Python
program it runs both get it, on every node, and the job still ends as its command does.
A few seconds per case.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabbrica.backends.slurm.script import BatchJob, render
from fabbrica.backends.slurm.status import SlurmState
from tests.conftest import need_service
from tests.slurm.conftest import Cluster, SlurmTestbed, poll

pytestmark = pytest.mark.slurm

# Says when its handler is set; then waits for SIGUSR1 (at most 40 s) and says it got it.
COMMAND = r"""
trap 'echo "shell $FABBRICA_NODE_RANK got usr1"' USR1
/usr/bin/python3 -c '
import os, signal, time
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
print("ready", os.environ["FABBRICA_NODE_RANK"], flush=True)
for _ in range(400):
    if got:
        print("python", os.environ["FABBRICA_NODE_RANK"], "got usr1", flush=True)
        break
    time.sleep(0.1)
'
echo "end $FABBRICA_NODE_RANK"
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the site user may write (pytest's tmp_path is closed to it)."""
    path = Path(tempfile.mkdtemp(prefix="fabbrica-signal-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("nodes", [1, 2])
def test_the_warning_reaches_the_jobs_shell_and_program_on_every_node(
    testbed: SlurmTestbed, shared_dir: Path, nodes: int
) -> None:
    found = [c for c in testbed.clusters if len(c.nodes) >= nodes]
    if not found or not testbed.users:
        need_service(f"no cluster of {nodes} node(s) with a site user")
    cluster: Cluster = found[-1]
    log = shared_dir / "log"
    job = BatchJob(
        job_id=int.from_bytes(os.urandom(3), "big"),
        name="warned",
        account=testbed.account,
        partition=cluster.partition,
        gpu_model=cluster.gpu_model,
        gpus=1,
        nodes=nodes,
        time_limit_seconds=300,
        command=COMMAND,
        env={},
        workdir=str(shared_dir),
        stdout_path=str(log),
        stderr_path=str(log),
        signal_grace_seconds=60,
        checkpoint_dir=str(shared_dir / "ckpt"),
    )
    script = shared_dir / "job.sh"
    script.write_text(render(job))
    script.chmod(0o644)
    slurm_id = cluster.sbatch(str(script), user=testbed.users[0])

    def text() -> str:
        return log.read_text() if log.exists() else ""

    poll(
        f"{nodes} rank(s) ready",
        lambda: True if len(re.findall(r"^ready \d$", text(), re.M)) == nodes else None,
        timeout=60,
    )
    cluster.run(["scancel", "--signal=USR1", "--batch", slurm_id])  # as slurmctld at the grace

    def ended() -> bool | None:
        record = cluster.sacct(slurm_id)
        return True if record is not None and record.state.finished else None

    poll(f"job {slurm_id} to end", ended, timeout=60)
    record = cluster.sacct(slurm_id)
    assert record is not None
    assert (record.state, record.exit_code) == (SlurmState.COMPLETED, 0), (record, text())
    for rank in range(nodes):
        for line in (f"python {rank} got usr1", f"shell {rank} got usr1", f"end {rank}"):
            assert re.search(rf"^{line}$", text(), re.M), text()
