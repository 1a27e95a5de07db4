"""Multi-node jobs on the testbed's two-node cluster (lumiaif: two slurmds, each in a network
namespace of its own): one process per node with torchrun's variables, a gloo all-reduce
across the nodes, one Slurm job on two nodes, charged for GPUs x nodes x elapsed.

The gloo test runs PyTorch from a virtual environment it makes once (`pip install
torch==2.13.0`, the CPU build from this machine's wheels; about 80 s) in
$FABBRICA_TEST_TORCH_VENV, by default /var/cache/fabbrica-tests/torch-2.13.0, and reuses.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fabbrica.core.billing import Holding, WholeNode, billed_units
from tests.conftest import need_service
from tests.slurm.agents import Federation, foreign_agents
from tests.slurm.conftest import Cluster, SlurmTestbed, poll

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TORCH = "torch==2.13.0"  # pip takes the CPU build from the local wheels; never uv for torch
DEFAULT_VENV = "/var/cache/fabbrica-tests/torch-2.13.0"
SYSTEM_PYTHON = "/usr/bin/python3"  # the site user can run it (uv's own Python is root's)

ALL_REDUCE = """\
import socket

import torch
import torch.distributed as dist

dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
rank = dist.get_rank()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"rank {rank} of {dist.get_world_size()} on {socket.gethostname()}: sum {value.item():g}")
dist.destroy_process_group()
"""


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
def torch_python() -> Path:
    """Python with PyTorch, in a virtual environment the site users can run, made once."""
    venv = Path(os.environ.get("FABBRICA_TEST_TORCH_VENV") or DEFAULT_VENV)
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.parent.chmod(0o755)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            for argv in (
                [SYSTEM_PYTHON, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--quiet", TORCH],
            ):
                done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
                assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
            (venv / ".complete").touch()
    return python


def submit(fed: Federation, cluster: Cluster, name: str, run: str, **files: str) -> dict[str, Any]:
    """A job of 1 GPU on each of 2 nodes at the cluster's factory, run to its end."""
    folder = fed.root / "specs" / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text)
    spec = {
        "name": name,
        "project": fed.project,
        "resources": {"gpus": 1, "nodes": 2, "gpu_model": "any", "time_limit": "10m"},
        "placement": {"factories": [cluster.factory]},
        "run": run,
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = fed.cli("run", str(folder / "job.yaml"), "--wait", "--json", timeout=600)
    assert done.returncode == 0, f"{done.stderr}\n{fed.output()}"
    job: dict[str, Any] = json.loads(done.stdout)
    assert (job["state"], job["factory"], job["gpus"]) == ("succeeded", cluster.factory, 2), job
    return job


def log_lines(fed: Federation, job_id: int, pattern: str, count: int) -> list[re.Match[str]]:
    def probe() -> list[re.Match[str]] | None:
        found = [m for m in re.finditer(pattern, fed.logs(job_id), re.MULTILINE)]
        return found if len(found) >= count else None

    try:
        return poll(f"{count} lines of job {job_id}'s log", probe, timeout=30)
    except AssertionError as failure:
        raise AssertionError(f"{failure}; the log:\n{fed.logs(job_id)}") from None


def one_job_on_two_nodes_charged_once(fed: Federation, cluster: Cluster, job_id: int) -> None:
    """sacct: one job (one allocation) on both nodes holding 2 GPUs; Fabbrica's usage record
    is those 2 GPUs (1 per node x 2 nodes) x sacct's elapsed, and its charge is GPUs per node
    x nodes x elapsed under the partition's billing: at lumi-aif whole nodes (8 GCDs at half
    rate), each of the 2 nodes charged whole, not the 1 node 2 GCDs would fill."""

    def sacct() -> list[list[str]] | None:
        out = cluster.run(
            ["sacct", "-X", "-a", "-P", "-n", "-A", fed.account, "-S", "now-1days",
             "-o", "JobID,Comment,State,NNodes,NodeList,AllocTRES,ElapsedRaw"]
        ).stdout  # fmt: skip
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        mine = [r for r in rows if r[1] == f"fab-{job_id}"]
        return mine or None  # the comment reaches sacct a moment after the end

    (row,) = poll(f"job {job_id} in sacct", sacct)
    _, _, state, nnodes, nodelist, tres, elapsed = row
    assert (state, nnodes) == ("COMPLETED", "2"), row
    nodes = cluster.run(["scontrol", "show", "hostnames", nodelist]).stdout.split()
    assert nodes == list(cluster.nodes[:2])
    assert "gres/gpu=2" in tres.split(","), tres
    sacct_gpus, sacct_nodes, sacct_s = 2, int(nnodes), int(elapsed)

    def record() -> dict[str, Any] | None:
        return next((r for r in fed.usage_records() if r["job_id"] == job_id), None)

    charged = poll(f"job {job_id}'s usage record", record)
    assert len([r for r in fed.usage_records() if r["job_id"] == job_id]) == 1
    # what sacct shows: gres/gpu=2 (1 per node x 2 nodes) for ElapsedRaw seconds
    assert (charged["gpus"], charged["elapsed_s"]) == (sacct_gpus, sacct_s)
    assert charged["gpus"] * charged["elapsed_s"] == 1 * sacct_nodes * sacct_s
    part = fed.sites[cluster.factory].partition
    per_node = sacct_gpus // sacct_nodes  # the spec's resources.gpus
    if isinstance(part.billing, WholeNode):  # lumi-aif: each node whole, whatever it uses
        units = part.gpus_per_node * sacct_nodes * part.billing.factor
        assert units > billed_units(part.billing, part.gpus_per_node, Holding(gpus=sacct_gpus))
    else:
        units = per_node * sacct_nodes * part.billing.factor
    held = Holding(gpus=sacct_gpus, nodes=sacct_nodes)
    assert units == billed_units(part.billing, part.gpus_per_node, held)
    assert charged["gpu_hours"] == pytest.approx(units * sacct_s / 3600)
    assert fed.job(job_id)["gpu_hours"] == pytest.approx(units * sacct_s / 3600)


def test_a_two_node_shell_job_runs_once_per_node_with_its_own_rank(
    federation: Federation, two_nodes: Cluster
) -> None:
    fed = federation
    run = (
        'echo "rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE nodes=$FABBRICA_NUM_NODES'
        ' master=$MASTER_ADDR:$MASTER_PORT host=$(hostname) slurm=$SLURMD_NODENAME"\nsleep 1'
    )
    job = submit(fed, two_nodes, "ranks", run)
    pattern = r"^rank=(\d+) local=(\d+) world=(\d+) nodes=(\d+) master=(\S+):(\d+)"
    pattern += r" host=(\S+) slurm=(\S+)$"
    lines = sorted(m.groups() for m in log_lines(fed, job["id"], pattern, 2))
    first, second = two_nodes.nodes[:2]
    assert len(lines) == 2, lines
    assert [line[:4] for line in lines] == [("0", "0", "2", "2"), ("1", "0", "2", "2")]
    masters = {line[4:6] for line in lines}
    assert len(masters) == 1 and next(iter(masters))[0] == first, masters
    assert [(line[6], line[7]) for line in lines] == [(first, first), (second, second)]
    one_job_on_two_nodes_charged_once(fed, two_nodes, job["id"])


def test_a_two_node_gloo_all_reduce_agrees_on_both_ranks(
    federation: Federation, two_nodes: Cluster, torch_python: Path
) -> None:
    fed = federation
    job = submit(fed, two_nodes, "gloo", f"{torch_python} all_reduce.py", **{
        "all_reduce.py": ALL_REDUCE
    })  # fmt: skip
    pattern = r"^rank (\d) of (\d) on (\S+): sum (\S+)$"
    lines = sorted(m.groups() for m in log_lines(fed, job["id"], pattern, 2))
    first, second = two_nodes.nodes[:2]
    assert lines == [("0", "2", first, "3"), ("1", "2", second, "3")], fed.logs(job["id"])
    one_job_on_two_nodes_charged_once(fed, two_nodes, job["id"])
