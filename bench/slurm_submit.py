"""Submission latency of a GPU job through Fabbrica and its site agent, against plain
sbatch, on an idle Slurm testbed cluster (jaif), from one run.

Starts `fabbrica up` (SQLite) and the site agent of jaif as processes (the harness of
tests/slurm/agents.py), then N times, one job after the other on the idle cluster:

(a) Fabbrica: starts `fabbrica run SPEC` (a CLI process: it packs and uploads the spec's
    folder), or with `--via api` sends `POST /api/v1/jobs` (the spec as JSON, from this
    process: the time from the API request, as the issue asks), and takes the wall time
    until the job is `running` in Fabbrica and until its Slurm job is RUNNING in squeue; on
    the way, when the CLI exits (the API answers), when the job is `dispatched` and when its
    Slurm job first shows in squeue.
(b) sbatch: starts `sbatch` (a process, as the same site user, in the same account) of the
    batch script Fabbrica renders for the same job (fabbrica.backends.slurm.script.render),
    and takes the wall time until the Slurm job is RUNNING in squeue.

Prints min / median / max of each, the ratio of the medians and the overhead in seconds.
Needs the testbed (scripts/slurm-testbed up) and root.

    uv run --frozen python bench/slurm_submit.py [--runs 10] [--via cli|api]
        [--factory jaif] [--loop-interval 0.5] [--agent-interval 0.5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.slurm.agents import SITE_USER, Federation, foreign_agents  # noqa: E402
from tests.slurm.conftest import Cluster, load, mapping_path  # noqa: E402

from fabbrica.backends.slurm.script import BatchJob, render  # noqa: E402
from fabbrica.backends.slurm.status import STATUS_ENV  # noqa: E402

FACTORY = "jaif"  # the default; --factory another
COMMAND = "sleep 3"
POLL_S = 0.05
BATCH_SCHED_DELAY_S = 3.0  # slurm.conf SchedulerParameters default
TIMEOUT_S = 120.0


def squeue(cluster: Cluster, account: str) -> dict[str, tuple[str, str]]:
    """Slurm job id -> (name, state) of the account's jobs the controller knows."""
    done = subprocess.run(  # noqa: S603 - fixed argv
        ["squeue", "-h", "--states=all", "-A", account, "-o", "%i|%j|%T"],  # noqa: S607
        env={**os.environ, **STATUS_ENV, "SLURM_CONF": cluster.slurm_conf},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    rows = {}
    for line in done.stdout.splitlines():
        slurm_id, name, state = line.split("|")
        rows[slurm_id] = (name, state)
    return rows


def until(what: str, probe: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(POLL_S)


def wait_idle(cluster: Cluster) -> None:
    """Until the node is idle (no job, none completing): each run starts on the same
    footing."""

    def idle() -> bool:
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["sinfo", "-h", "-p", cluster.partition, "-o", "%T"],  # noqa: S607
            env={**os.environ, "SLURM_CONF": cluster.slurm_conf},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.split()
        return out == ["idle"]

    until(f"{cluster.name} to be idle", idle)
    # Slurm defers scheduling a batch job submitted within batch_sched_delay (3 s by
    # default) of its last scheduling pass, which ran when the previous job ended: wait it
    # out so that neither path pays it (and the agent has reported the idle node).
    time.sleep(BATCH_SCHED_DELAY_S + 0.5)


class ApiSubmission:
    """`POST /api/v1/jobs` from this process, in a thread (the times go on meanwhile)."""

    def __init__(self, fed: Federation, spec: Path) -> None:
        import threading

        body = {"spec": yaml.safe_load(spec.read_text()), "project": fed.project}
        self.returncode: int | None = None
        http = fed.http(fed.user_token)

        def send() -> None:
            answer = http.post("/jobs", json=body)
            self.returncode = 0 if answer.status_code == 201 else answer.status_code

        self.thread = threading.Thread(target=send)
        self.thread.start()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float) -> Any:
        self.thread.join(timeout)


def through_fabbrica(
    fed: Federation, spec: Path, known: set[int], via: str = "cli"
) -> dict[str, float]:
    """Times (s from the CLI's start, or the API request) of one job through Fabbrica."""
    (site,) = fed.sites.values()  # the one factory of the run
    cluster = site.cluster
    assert fed.server is not None
    http = fed.http(fed.user_token)
    times: dict[str, float] = {}
    wait_idle(cluster)
    began = time.monotonic()
    client: subprocess.Popen[bytes] | ApiSubmission
    if via == "api":
        client = ApiSubmission(fed, spec)
    else:
        client = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "fabbrica", "run", str(spec), "--json"],
            env=fed.server.client_env(fed.user_token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    job_id: int | None = None
    while "fabbrica running" not in times or "slurm RUNNING" not in times:
        now = time.monotonic() - began
        if now > TIMEOUT_S:
            raise RuntimeError(f"the job did not run in {TIMEOUT_S:g} s")
        if "cli exits" not in times and client.poll() is not None:
            if client.poll() != 0:
                raise RuntimeError(f"the submission failed ({client.poll()})")
            times["cli exits"] = now
        jobs = http.get("/jobs", params={"project_id": fed.project}).json()
        mine = [j for j in jobs if j["id"] not in known]
        if mine:
            job = mine[0]
            job_id = job["id"]
            if job["state"] != "queued":
                times.setdefault("dispatched", now)
            if job["state"] not in ("queued", "dispatched"):
                times.setdefault("fabbrica running", now)
        if job_id is not None:
            tag = f"fab-{job_id}"
            for name, state in squeue(cluster, fed.account).values():
                if name == tag or name.startswith(f"{tag}-"):
                    times.setdefault("in squeue", now)
                    if state not in ("PENDING", "CONFIGURING"):
                        times.setdefault("slurm RUNNING", now)
        time.sleep(POLL_S)
    client.wait(30)
    assert job_id is not None
    known.add(job_id)
    until(
        f"job {job_id} to end",
        lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed"),
    )
    return times


def plain_sbatch(fed: Federation, n: int, folder: Path) -> dict[str, float]:
    """Times (s from sbatch's start) of the same batch script submitted with sbatch."""
    (site,) = fed.sites.values()  # the one factory of the run
    cluster = site.cluster
    work = folder / f"run{n}"
    work.mkdir()
    shutil.chown(work, SITE_USER, SITE_USER)
    script = folder / f"job{n}.sh"
    script.write_text(
        render(
            BatchJob(
                job_id=10**9 + n,  # a tag no Fabbrica job has
                name="",
                account=fed.account,
                partition=cluster.partition,
                gpu_model=cluster.gpu_model,
                gpus=1,
                time_limit_seconds=600,
                command=COMMAND,
                env={},
                workdir=str(work),
                stdout_path=str(work / "log"),
                stderr_path=str(work / "log"),
            )
        )
    )
    script.chmod(0o644)
    env = {**os.environ, "SLURM_CONF": cluster.slurm_conf}
    wait_idle(cluster)
    began = time.monotonic()
    out = subprocess.run(  # noqa: S603 - fixed argv
        ["runuser", "-u", SITE_USER, "--", "sbatch", "--parsable", str(script)],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    times = {"sbatch exits": time.monotonic() - began}
    slurm_id = out.strip().split(";")[0]

    def running() -> bool:
        state = squeue(cluster, fed.account).get(slurm_id, ("", "PENDING"))[1]
        return state not in ("PENDING", "CONFIGURING")

    until(f"Slurm job {slurm_id} to run", running)
    times["slurm RUNNING"] = time.monotonic() - began
    until(
        f"Slurm job {slurm_id} to end",
        lambda: (
            squeue(cluster, fed.account).get(slurm_id, ("", "COMPLETED"))[1]
            not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
        ),
    )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--loop-interval", type=float, default=0.5,
                        help="FABBRICA_LOOP_INTERVAL_SECONDS of the server")  # fmt: skip
    parser.add_argument("--agent-interval", type=float, default=0.5,
                        help="the agent's --interval (seconds between syncs)")  # fmt: skip
    parser.add_argument("--via", choices=("cli", "api"), default="cli",
                        help="submit with `fabbrica run` or POST /api/v1/jobs")  # fmt: skip
    parser.add_argument("--factory", default=FACTORY, help="the testbed factory")
    parser.add_argument("--shared", action="store_true",
                        help="run even beside other agents on the testbed")  # fmt: skip
    args = parser.parse_args()
    factory = args.factory
    if os.geteuid() != 0:
        sys.exit("run as root (sbatch as the site user with runuser, sacctmgr)")
    bed = load(mapping_path())
    others = foreign_agents(bed)
    if others and not args.shared:
        sys.exit("other site agents run on the testbed (they delete this run's Slurm account):\n"
                 + "\n".join(others))  # fmt: skip
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="fabbrica-bench-slurm-"))
    scripts = Path(tempfile.mkdtemp(prefix="fabbrica-bench-sbatch-"))
    scripts.chmod(0o755)
    fed = Federation(
        bed,
        root,
        interval_s=args.agent_interval,
        loop_interval_s=args.loop_interval,
        factories=[factory],
        lease_s=60.0,
    )
    fabbrica: list[dict[str, float]] = []
    sbatch: list[dict[str, float]] = []
    try:
        fed.start()
        spec = fed.spec("bench", COMMAND, model=bed.cluster(factory).gpu_model)
        known: set[int] = set()
        through_fabbrica(fed, spec, known, args.via)  # warm-up: first account sync, caches
        plain_sbatch(fed, 0, scripts)
        for n in range(1, args.runs + 1):
            fabbrica.append(through_fabbrica(fed, spec, known, args.via))
            sbatch.append(plain_sbatch(fed, n, scripts))
            console.print(
                f"run {n}: fabbrica {fabbrica[-1]['slurm RUNNING']:.2f} s to RUNNING, "
                f"{fabbrica[-1]['fabbrica running']:.2f} s to running; "
                f"sbatch {sbatch[-1]['slurm RUNNING']:.2f} s",
                highlight=False,
            )
    finally:
        fed.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(scripts, ignore_errors=True)

    table = Table(
        title=f"GPU job submission on idle {factory} ({bed.cluster(factory).gpu_model}), "
        f"{args.runs} runs, s from the client process's start"
        + (" (Fabbrica: from the API request)" if args.via == "api" else "")
    )
    for column in ("path", "until", "min", "median", "max"):
        table.add_column(column, justify="left" if column in ("path", "until") else "right")
    path = "fabbrica run" if args.via == "cli" else "POST /jobs"
    rows = [
        (path, "the CLI exits" if args.via == "cli" else "the API answers", fabbrica, "cli exits"),
        (path, "job dispatched", fabbrica, "dispatched"),
        (path, "Slurm job in squeue", fabbrica, "in squeue"),
        (path, "Slurm job RUNNING", fabbrica, "slurm RUNNING"),
        (path, "job running in Fabbrica", fabbrica, "fabbrica running"),
        ("sbatch", "sbatch exits", sbatch, "sbatch exits"),
        ("sbatch", "Slurm job RUNNING", sbatch, "slurm RUNNING"),
    ]
    for path, what, runs, key in rows:
        values = [r[key] for r in runs]
        table.add_row(
            path, what, f"{min(values):.2f}", f"{statistics.median(values):.2f}",
            f"{max(values):.2f}",
        )  # fmt: skip
    console.print(table)
    plain = statistics.median(r["slurm RUNNING"] for r in sbatch)
    slurm = statistics.median(r["fabbrica running"] - r["slurm RUNNING"] for r in fabbrica)
    console.print(
        f"Fabbrica shows running {slurm:+.2f} s after Slurm does (median of the differences)",
        highlight=False,
    )
    for label, key in (
        ("RUNNING in Slurm", "slurm RUNNING"),
        ("running in Fabbrica", "fabbrica running"),
    ):
        ours = statistics.median(r[key] for r in fabbrica)
        console.print(
            f"Fabbrica ({label}) / sbatch: {ours / plain:.1f}x; "
            f"overhead {ours - plain:+.2f} s (median {ours:.2f} s vs {plain:.2f} s)",
            highlight=False,
        )
    console.print(
        f"FABBRICA_LOOP_INTERVAL_SECONDS={args.loop_interval:g}, agent --interval "
        f"{args.agent_interval:g} s (accounts every 10 syncs and before each launch), "
        f"SQLite; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )


if __name__ == "__main__":
    main()
