"""The testbed's clusters schedule emulated GPUs, account for them, refuse what they lack,
run jobs as site users and enforce GPU-minute limits."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from fabbrica.backends.slurm.status import SlurmJob, SlurmState, parse_squeue, squeue_argv
from tests.slurm.conftest import Cluster, SlurmTestbed, poll

pytestmark = pytest.mark.slurm

MODELS = ("a100", "h100", "gh200", "mi250x")


def tag() -> str:
    return f"fab-{secrets.randbelow(10**9)}"


def finished(cluster: Cluster, job_id: str) -> SlurmJob:
    def probe() -> SlurmJob | None:
        job = cluster.sacct(job_id)
        return job if job is not None and job.state.finished else None

    return poll(f"job {job_id} on {cluster.name} to finish", probe, timeout=30)


def queued(cluster: Cluster, job_ids: list[str]) -> list[SlurmJob]:
    return parse_squeue(cluster.run(squeue_argv(job_ids)).stdout)


def test_each_cluster_runs_a_one_gpu_job_of_its_model(testbed: SlurmTestbed) -> None:
    submitted = []
    for cluster in testbed.clusters:
        comment = tag()
        job_id = cluster.sbatch(
            f"--gres=gpu:{cluster.gpu_model}:1",
            f"--partition={cluster.partition}",
            "--time=1",
            f"--comment={comment}",
            f"--job-name={comment}-gpu",
            "--chdir=/tmp",
            "--output=/dev/null",
            "--wrap=sleep 1",
        )
        submitted.append((cluster, job_id, comment))
    for cluster, job_id, comment in submitted:
        job = finished(cluster, job_id)
        assert (job.state, job.exit_code, job.comment, job.run_tag) == (
            SlurmState.COMPLETED,
            0,
            comment,
            comment,
        ), cluster.name
        assert (job.gpus, job.gpu_model) == (1, cluster.gpu_model)
        # sacct's first record of a short job may lack the partition for a few seconds
        (known,) = queued(cluster, [job_id])
        assert (known.state, known.partition, known.comment) == (
            SlurmState.COMPLETED,
            cluster.partition,
            comment,
        )
        raw = cluster.run(
            ["sacct", "-X", "-n", "-P", f"-j{job_id}", "-oAllocTRES,Comment"]
        ).stdout.strip()
        alloc, _, stored_comment = raw.rpartition("|")
        assert "gres/gpu=1" in alloc.split(","), raw
        assert stored_comment == comment


def test_four_one_gpu_jobs_share_a_node(testbed: SlurmTestbed) -> None:
    cluster = testbed.clusters[0]
    ids = [
        cluster.sbatch(
            f"--gres=gpu:{cluster.gpu_model}:1",
            "--time=1",
            "--chdir=/tmp",
            "--output=/dev/null",
            "--wrap=sleep 60",
        )
        for _ in range(cluster.gpus)
    ]
    try:

        def all_running() -> list[SlurmJob] | None:
            jobs = queued(cluster, ids)
            return jobs if [j.state for j in jobs] == [SlurmState.RUNNING] * len(ids) else None

        jobs = poll(f"{len(ids)} jobs running together on {cluster.name}", all_running, timeout=30)
        assert sum(job.gpus for job in jobs) == cluster.gpus
    finally:
        cluster.run(["scancel", *ids])


def test_a_gpu_model_the_cluster_lacks_is_refused(testbed: SlurmTestbed) -> None:
    for cluster in testbed.clusters:
        other = next(m for m in MODELS if m != cluster.gpu_model)
        refused = cluster.run(
            ["sbatch", f"--gres=gpu:{other}:1", "--output=/dev/null", "--wrap=true"],
            check=False,
        )
        assert refused.returncode != 0, cluster.name
        assert "Requested node configuration is not available" in refused.stderr
        too_many = cluster.run(
            [
                "sbatch",
                f"--gres=gpu:{cluster.gpu_model}:{cluster.gpus + 1}",
                "--output=/dev/null",
                "--wrap=true",
            ],
            check=False,
        )
        assert too_many.returncode != 0, cluster.name


@pytest.mark.parametrize("how", ["runuser", "sbatch --uid"])
def test_a_job_as_a_site_user_runs_as_that_user(
    testbed: SlurmTestbed, user_dir: Callable[[str], Path], how: str
) -> None:
    user = testbed.users[0]
    cluster = testbed.clusters[-1]
    out_dir = user_dir(user)
    args = [
        f"--gres=gpu:{cluster.gpu_model}:1",
        "--time=1",
        f"--chdir={out_dir}",
        f"--output={out_dir}/%j.out",
        "--wrap=id -un; id -gn; touch mine",
    ]
    if how == "runuser":
        job_id = cluster.sbatch(*args, user=user)
    else:  # root may still submit for another user in 22.05; --gid or the group is root's
        job_id = cluster.sbatch(f"--uid={user}", f"--gid={user}", *args)
    job = finished(cluster, job_id)
    assert (job.state, job.user, job.account) == (SlurmState.COMPLETED, user, testbed.account)
    assert (out_dir / f"{job_id}.out").read_text().split() == [user, user]
    assert (out_dir / "mine").owner() == user


def test_grp_tres_mins_holds_back_a_job_that_would_pass_the_gpu_minutes(
    testbed: SlurmTestbed, temp_account: Callable[[Cluster], str]
) -> None:
    cluster = testbed.clusters[0]
    account = temp_account(cluster)
    cluster.acct(
        "modify", "account", account, "where", f"cluster={cluster.name}", "set",
        "GrpTRESMins=gres/gpu=1",
    )  # fmt: skip

    def submit(minutes: int) -> str | None:
        done = cluster.run(
            [
                "sbatch",
                "--parsable",
                f"--account={account}",
                f"--gres=gpu:{cluster.gpu_model}:1",
                f"--time={minutes}",
                "--chdir=/tmp",
                "--output=/dev/null",
                "--wrap=sleep 1",
            ],
            check=False,
        )  # the new association may take a moment to reach slurmctld
        return done.stdout.strip() if done.returncode == 0 else None

    held_id = poll("the new account to be usable", lambda: submit(2), timeout=10)
    fits_id = poll("a second submission", lambda: submit(1), timeout=10)

    def reason() -> str | None:
        (job,) = queued(cluster, [held_id])
        return job.reason if job.state is SlurmState.PENDING and job.reason else None

    assert poll("a pending reason", reason, timeout=30) == "AssocGrpGRESMinutes"
    assert finished(cluster, fits_id).state is SlurmState.COMPLETED  # 1 GPU x 1 min fits
    (held,) = queued(cluster, [held_id])
    assert (held.state, held.reason) == (SlurmState.PENDING, "AssocGrpGRESMinutes")
