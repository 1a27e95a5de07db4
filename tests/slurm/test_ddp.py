"""The `llm-pretrain` template on two nodes, on the testbed's two-node cluster (lumiaif: two
slurmds, each in a network namespace of its own), through the CLI and the site agent: one
Slurm job on both nodes, one process per node joined into a gloo process group from the
torchrun variables, trained with DistributedDataParallel; rank 0 alone logs the steps,
saves checkpoints and writes the model.

The nodes reach the other node and the controller's address only (no index for pip), so
the site user's LLM environment is made beforehand on the host, by the template's own
`llm.sh` run as that user (`~fabuser1/.cache/fabbrica/llm-torch-2.13.0`: pip takes torch's
CPU build from this machine's wheels; about 80 s the first time, then reused); the job's
`llm.sh` on the nodes finds it ready (the file system is the machine's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabbrica.services.templates import SHARED, SHIPPED
from tests.conftest import need_service
from tests.slurm.agents import SITE_USER, Federation, foreign_agents
from tests.slurm.conftest import Cluster, SlurmTestbed, poll

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 30
SMALL = {
    "nodes": "2", "steps": str(STEPS), "layers": "1", "width": "32", "heads": "2",
    "seq_len": "32", "batch_size": "4", "step_delay": "0.3", "checkpoint_every": "3s",
    "time_limit": "10m",
}  # fmt: skip


@pytest.fixture
def two_nodes(testbed: SlurmTestbed) -> Cluster:
    found = [c for c in testbed.clusters if len(c.nodes) >= 2]
    if not found:
        need_service("no cluster of two nodes (scripts/slurm-testbed up makes lumiaif two)")
    return found[0]


@pytest.fixture
def federation(testbed: SlurmTestbed, two_nodes: Cluster, tmp_path: Path) -> Iterator[Federation]:
    """A federation of the two-node cluster's factory only."""
    others = foreign_agents(testbed)
    if others and not os.environ.get("FABBRICA_TESTBED_SHARED"):
        need_service("other site agents run on the testbed: " + "; ".join(others))
    fed = Federation(testbed, tmp_path / "federation", factories=[two_nodes.factory])
    try:
        yield fed.start()
    finally:
        fed.close()


@pytest.fixture(scope="session")
def site_user_llm_env() -> None:
    """The site user's LLM environment, made on the host by the template's `llm.sh` (a
    no-op when it is there already), as a site without network on its nodes would."""
    folder = Path(tempfile.mkdtemp(prefix="fabbrica-llm-env-"))
    try:
        shutil.copy(SHIPPED / SHARED / "llm" / "llm.sh", folder / "llm.sh")
        folder.chmod(0o755)
        (folder / "llm.sh").chmod(0o644)
        done = subprocess.run(
            ["runuser", "-u", SITE_USER, "--", "sh", "llm.sh", "-c", "import torch"],
            cwd=folder, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_llm_pretrain_on_two_nodes_trains_with_ddp_as_one_slurm_job(
    federation: Federation, two_nodes: Cluster, site_user_llm_env: None
) -> None:
    fed = federation
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    made = fed.cli_json("run", "--template", "llm-pretrain", *sets, "--project", fed.project)
    job = fed.wait_finished(int(made["id"]), timeout=600)
    log = fed.logs(job["id"])
    print(log)  # shown with -rP
    assert (job["state"], job["factory"], job["gpus"]) == (
        "succeeded",
        two_nodes.factory,
        2,
    ), f"{log}\n{fed.output()}"

    first, second = two_nodes.nodes[:2]
    joined = sorted(re.findall(r"^rank (\d) of (\d) joined on (\S+) \(gloo, master (\S+)\)$",
                               log, re.M))  # fmt: skip
    assert [j[:3] for j in joined] == [("0", "2", first), ("1", "2", second)], log
    assert {j[3].rsplit(":", 1)[0] for j in joined} == {first}, joined  # one master

    steps = [int(s) for s in re.findall(r"^step (\d+) loss \d", log, re.M)]
    assert steps and steps == sorted(set(steps)) and steps[-1] == STEPS, log  # rank 0's only
    saved = re.findall(r"^checkpoint saved at step (\d+)", log, re.M)
    assert saved and len(saved) == len(set(saved)), log  # one saver: no step saved twice
    assert len(re.findall(r"^held-out loss \d", log, re.M)) == 1, log
    written = r"^(model llm-pretrain (written|registered)|mlflow is not installed)"
    assert len(re.findall(written, log, re.M)) == 1, log

    def sacct() -> list[list[str]] | None:
        out = two_nodes.run(
            ["sacct", "-X", "-a", "-P", "-n", "-A", fed.account, "-S", "now-1days",
             "-o", "Comment,State,NNodes,NodeList"]
        ).stdout  # fmt: skip
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        mine = [r for r in rows if r[0] == f"fab-{job['id']}"]
        return mine or None  # the comment reaches sacct a moment after the end

    (row,) = poll(f"job {job['id']} in sacct", sacct)
    assert row[1:3] == ["COMPLETED", "2"], row
    assert two_nodes.run(["scontrol", "show", "hostnames", row[3]]).stdout.split() == [
        first,
        second,
    ]


RESUME_STEPS = 90
RESUMING = {
    **SMALL, "steps": str(RESUME_STEPS), "step_delay": "1", "time_limit": "1m",
    "grace": "30s", "checkpoint_every": "5s", "resume": "true",
}  # fmt: skip


@pytest.mark.skipif(
    not os.environ.get("FABBRICA_TEST_LLM"), reason="set FABBRICA_TEST_LLM=1 (minutes)"
)
def test_two_nodes_that_reach_the_time_limit_resume_together_from_rank_0s_checkpoint(
    federation: Federation, two_nodes: Cluster, site_user_llm_env: None
) -> None:
    """Each run has a 1-minute limit and a step takes over a second: at most ~80 of the 90
    steps in a run, even if Slurm ends it half a minute late. The job runs again (its
    next run placed at the same factory) until done; each later run's two ranks load the
    checkpoint rank 0 saved and the step counter goes on from it."""
    fed = federation
    sets = [arg for key, value in RESUMING.items() for arg in ("--set", f"{key}={value}")]
    made = fed.cli_json("run", "--template", "llm-pretrain", *sets, "--project", fed.project)
    job = fed.wait_finished(int(made["id"]), timeout=900)
    log = fed.logs(job["id"])  # the last run's (a Slurm run's log replaces the one before)
    print(log)
    assert job["state"] == "succeeded", f"{log}\n{fed.output()}"
    first, second = two_nodes.nodes[:2]
    joined = sorted(re.findall(r"^rank (\d) of 2 joined on (\S+) ", log, re.M))
    assert joined == [("0", first), ("1", second)], log
    (start,) = map(int, re.findall(r"^resuming from step (\d+)$", log, re.M))  # rank 0 only
    assert 0 < start < RESUME_STEPS, log
    steps = [int(s) for s in re.findall(r"^step (\d+) loss \d", log, re.M)]
    assert steps and steps[0] > start and steps[-1] == RESUME_STEPS, log  # it goes on
    assert steps == sorted(set(steps)), log
    saved = re.findall(r"^checkpoint saved at step (\d+)", log, re.M)
    assert len(saved) == len(set(saved)), log  # one saver

    def sacct() -> list[list[str]] | None:
        out = two_nodes.run(
            ["sacct", "-X", "-a", "-P", "-n", "-A", fed.account, "-S", "now-1days",
             "-o", "Comment,State,NNodes"]
        ).stdout  # fmt: skip
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        mine = [r for r in rows if r[0] == f"fab-{job['id']}"]
        return mine if mine and mine[-1][1] == "COMPLETED" else None

    rows = poll(f"job {job['id']}'s runs in sacct", sacct)
    assert len(rows) >= 2 and [r[2] for r in rows] == ["2"] * len(rows), rows
    assert [r[1] for r in rows] == ["TIMEOUT"] * (len(rows) - 1) + ["COMPLETED"], rows
