"""Site agents on the Slurm testbed, end to end: `fabbrica up` and one `fabbrica agent` per
cluster as processes, jobs submitted with the CLI, and what Slurm itself shows (sacct,
squeue, sacctmgr) checked against what Fabbrica says.

Each test runs its own server, data directory and project (so its own Slurm account), with
a lease of 8 s (20 s where a controller stops); `tests/slurm/agents.py` has the harness.
Other site agents on the same testbed (someone's manual federation) would fight over the
`fab-` accounts: the tests are skipped then (failed on CI), unless FABBRICA_TESTBED_SHARED=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fabbrica.core.billing import Holding, billed_units
from tests.conftest import need_service
from tests.slurm.agents import (
    SITE_USER,
    Federation,
    SacctJob,
    associations,
    foreign_agents,
    sacct_jobs,
    squeue_state,
)
from tests.slurm.conftest import SlurmTestbed, poll

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LEASE_S = 8.0
Make = Callable[..., Federation]


@pytest.fixture
def federation(testbed: SlurmTestbed, tmp_path: Path) -> Iterator[Make]:
    """Start federations (`make(**options)`); each is closed, and cleaned up, at the end."""
    others = foreign_agents(testbed)
    if others and not os.environ.get("FABBRICA_TESTBED_SHARED"):
        need_service(
            "other site agents run on the testbed and would delete this test's Slurm "
            "accounts (set FABBRICA_TESTBED_SHARED=1 to run anyway): " + "; ".join(others)
        )
    made: list[Federation] = []

    def make(**options: Any) -> Federation:
        options.setdefault("lease_s", LEASE_S)
        fed = Federation(testbed, tmp_path / f"federation{len(made)}", **options)
        made.append(fed)
        return fed.start()

    yield make
    for fed in reversed(made):
        fed.close()


def tagged(fed: Federation, factory: str, job_id: int) -> list[SacctJob]:
    """sacct's records of the Slurm jobs that ran Fabbrica job `job_id` at `factory`."""
    cluster = fed.sites[factory].cluster
    return [j for j in sacct_jobs(cluster, fed.account) if j.runs(job_id)]


def settled(fed: Federation, factory: str, job_id: int, count: int = 1) -> list[SacctJob]:
    """The job's records in sacct (at least `count`) once each has its comment `fab-<id>`
    (it reaches sacct a moment after the job ended)."""

    def probe() -> list[SacctJob] | None:
        found = tagged(fed, factory, job_id)
        ok = len(found) >= count and all(r.comment == f"fab-{job_id}" for r in found)
        return found if ok else None

    return poll(f"{count} Slurm job(s) of job {job_id} in sacct at {factory}", probe)


def billed_seconds(fed: Federation, factory: str, gpus: int, elapsed_s: int) -> float:
    """GPU-seconds charged for `gpus` x `elapsed_s` under the partition's billing rule
    (per GPU at it4lia and jaif; whole 8-GCD nodes at half rate at lumi-aif)."""
    part = fed.sites[factory].partition
    return billed_units(part.billing, part.gpus_per_node, Holding(gpus=gpus)) * elapsed_s


# --- 1. placement ------------------------------------------------------------------------------


def test_a_gh200_job_runs_at_jaif_as_the_member(federation: Make) -> None:
    fed = federation()
    spec = fed.spec(
        "needs-gh200",
        'echo "hello from $(id -un) in slurm job $SLURM_JOB_ID on $SLURM_JOB_PARTITION"\n'
        "sleep 2\necho done\n",
        model="gh200",
    )
    done = fed.cli("run", str(spec), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]

    job = fed.cli_json("job", str(job_id))
    assert (job["state"], job["factory"], job["partition"], job["gpu_model"]) == (
        "succeeded",
        "jaif",
        "booster",
        "gh200",
    )
    (run,) = settled(fed, "jaif", job_id)
    assert (run.account, run.user, run.state, run.gpus) == (
        fed.account,
        SITE_USER,
        "COMPLETED",
        1,
    )
    for other in ("it4lia", "lumi-aif"):
        assert tagged(fed, other, job_id) == []
    expected = f"hello from {SITE_USER} in slurm job {run.site_job_id} on gpu"
    log = poll("the whole log", lambda: text if "done" in (text := fed.logs(job_id)) else None)
    assert expected in log


def test_an_any_model_job_goes_where_it_starts_first(federation: Make) -> None:
    fed = federation()
    blockers = {
        factory: fed.submit(fed.spec(f"block-{model}", "sleep 60", gpus=4, model=model))
        for factory, model in (("it4lia", "a100"), ("jaif", "gh200"))
    }
    for factory, job_id in blockers.items():
        job = fed.wait_state(job_id, "running")
        assert job["factory"] == factory
        fed.wait_free(factory, 0)

    spec = fed.spec(
        "any-model", 'echo "any: $(id -un) on $SLURMD_NODENAME"\nsleep 1\necho done\n', gpus=2
    )
    done = fed.cli("run", str(spec), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["factory"], job["gpus"]) == ("succeeded", "lumi-aif", 2)
    runs = settled(fed, "lumi-aif", job["id"])
    assert [(r.state, r.gpus, r.user) for r in runs] == [("COMPLETED", 2, SITE_USER)]
    log = poll("the log", lambda: t if "done" in (t := fed.logs(job["id"])) else None)
    assert f"any: {SITE_USER} on lumiaifn1" in log

    for job_id in blockers.values():  # the blockers were never needed further
        assert fed.cli("cancel", str(job_id)).returncode == 0
    for job_id in blockers.values():
        assert fed.wait_finished(job_id)["state"] == "cancelled"


# --- 2. charging -------------------------------------------------------------------------------


def test_what_fabbrica_charges_is_what_sacct_shows(federation: Make) -> None:
    """Jobs on the three clusters (1, 2 GPUs; succeeded, failed, cancelled while running):
    per project, per factory and per job, Fabbrica's charge equals sacct's ElapsedRaw x
    gres/gpu under the partition's billing rule, to the second."""
    fed = federation()
    jobs = {
        "jaif-1gpu": ("gh200", 1, "echo one; sleep 3"),
        "it4lia-2gpu": ("a100", 2, "echo two; sleep 2"),
        "lumi-2gpu": ("mi250x", 2, "echo three; sleep 2"),
        "it4lia-fails": ("a100", 1, "sleep 1; echo failing >&2; exit 3"),
        "jaif-cancelled": ("gh200", 2, "echo long; sleep 120"),
    }
    ids = {
        name: fed.submit(fed.spec(name, run, gpus=gpus, model=model))
        for name, (model, gpus, run) in jobs.items()
    }
    cancelled = ids["jaif-cancelled"]
    fed.wait_state(cancelled, "running")
    poll("some seconds of the long job", lambda: True if _ran(fed, cancelled) >= 3 else None)
    assert fed.cli("cancel", str(cancelled)).returncode == 0
    final = {name: fed.wait_finished(job_id) for name, job_id in ids.items()}
    assert {n: j["factory"] for n, j in final.items()} == {
        "jaif-1gpu": "jaif",
        "it4lia-2gpu": "it4lia",
        "lumi-2gpu": "lumi-aif",
        "it4lia-fails": "it4lia",
        "jaif-cancelled": "jaif",
    }
    assert {n: j["state"] for n, j in final.items()} == {
        "jaif-1gpu": "succeeded",
        "it4lia-2gpu": "succeeded",
        "lumi-2gpu": "succeeded",
        "it4lia-fails": "failed",
        "jaif-cancelled": "cancelled",
    }

    # sacct: one Slurm job per Fabbrica job, at the factory Fabbrica names
    found = {name: settled(fed, job["factory"], job["id"]) for name, job in final.items()}
    assert all(len(f) == 1 for f in found.values()), found
    runs = {name: f[0] for name, f in found.items()}
    assert runs["jaif-cancelled"].state == "CANCELLED"
    assert runs["it4lia-fails"].state == "FAILED"
    every = [j for site in fed.sites.values() for j in sacct_jobs(site.cluster, fed.account)]
    assert sorted(j.site_job_id for j in every) == sorted(r.site_job_id for r in runs.values())

    expected = {
        name: billed_seconds(fed, final[name]["factory"], run.gpus, run.elapsed_s)
        for name, run in runs.items()
    }
    # per project (`fabbrica usage --by project`)
    usage = fed.cli_json("usage", "--by", "project")
    assert [(r["key"], r["jobs"]) for r in usage] == [(fed.project, len(jobs))]
    assert round(usage[0]["gpu_hours"] * 3600) == round(sum(expected.values()))
    # per factory
    by_factory = {r["key"]: r for r in fed.cli_json("usage", "--by", "factory")}
    for factory in fed.sites:
        names = [n for n, j in final.items() if j["factory"] == factory]
        assert by_factory[factory]["jobs"] == len(names)
        want = sum(expected[n] for n in names)
        assert round(by_factory[factory]["gpu_hours"] * 3600) == round(want), factory
        if fed.sites[factory].partition.billing.rule == "per_gpu":  # plain GPU-seconds
            raw = sum(runs[n].gpu_seconds for n in names)
            assert round(by_factory[factory]["gpu_hours"] * 3600) == raw, factory
    # per job (`fabbrica job`), and the usage records behind the sums
    for name, job in final.items():
        assert round(job["gpu_hours"] * 3600) == round(expected[name]), name
    records = {r["job_id"]: r for r in fed.usage_records()}
    assert sorted(records) == sorted(ids.values())
    for name, run in runs.items():
        record = records[ids[name]]
        assert (record["site_job_id"], record["factory_id"]) == (
            run.site_job_id,
            final[name]["factory"],
        )
        assert record["gpus"] * record["elapsed_s"] == run.gpu_seconds, name
    assert sum(r["gpus"] * r["elapsed_s"] for r in records.values()) == sum(
        r.gpu_seconds for r in runs.values()
    )


def _ran(fed: Federation, job_id: int) -> float:
    job = fed.job(job_id)
    if not job["started_at"]:
        return 0.0
    started = dt.datetime.fromisoformat(job["started_at"])
    return (dt.datetime.now(dt.UTC) - started).total_seconds()


# --- 3. an agent killed while its jobs run ----------------------------------------------------


def test_an_agent_killed_while_its_jobs_run_picks_them_up_again(federation: Make) -> None:
    fed = federation()
    ids = [
        fed.submit(fed.spec(f"long-{n}", f"echo begin {n}; sleep 20; echo end {n}", model="gh200"))
        for n in (1, 2)
    ]
    for job_id in ids:
        assert fed.wait_state(job_id, "running")["factory"] == "jaif"
    jaif = fed.sites["jaif"].cluster
    before = {job_id: fed.slurm_ids(job_id, "jaif") for job_id in ids}
    assert all(len(s) == 1 for s in before.values()), before

    fed.kill_agent("jaif")
    for slurm_ids in before.values():  # Slurm runs on without its agent
        assert squeue_state(jaif, slurm_ids[0]) == ("RUNNING", "None")
    fed.start_agent("jaif")

    final = [fed.wait_finished(job_id) for job_id in ids]
    assert [(j["state"], j["factory"]) for j in final] == [("succeeded", "jaif")] * 2
    runs = []
    for job_id in ids:
        found = settled(fed, "jaif", job_id)
        assert [r.site_job_id for r in found] == before[job_id], "submitted again"
        assert found[0].state == "COMPLETED"
        runs.extend(found)
    assert len(sacct_jobs(jaif, fed.account)) == 2
    usage = fed.cli_json("usage", "--by", "project")
    assert [(r["key"], r["jobs"]) for r in usage] == [(fed.project, 2)]
    assert round(usage[0]["gpu_hours"] * 3600) == sum(r.gpu_seconds for r in runs)
    for job_id in ids:  # the log is whole, and once
        n = ids.index(job_id) + 1

        def whole(i: int = job_id) -> str | None:
            text = fed.logs(i)
            return text if "end" in text else None

        log = poll("the whole log", whole)
        assert log.count(f"begin {n}") == 1 and log.count(f"end {n}") == 1, log


# --- 4. a cluster whose controller stops ------------------------------------------------------

# Longer than the ~10 s scontrol takes to give up on a stopped controller, so that the agent
# has reported the outage (no capacity) before the lease ends, as with the default of 60 s.
OUTAGE_LEASE_S = 20.0


def test_a_cluster_down_loses_its_jobs_after_the_lease_only(federation: Make) -> None:
    fed = federation(lease_s=OUTAGE_LEASE_S)
    marker = fed.user_dir() / "first-run"  # the first run waits, a second one ends soon
    run = f"if [ -e {marker} ]; then echo again; sleep 2; else touch {marker}; sleep 300; fi"
    held = fed.submit(fed.spec("held-at-jaif", run, model="gh200"))
    assert fed.wait_state(held, "running")["factory"] == "jaif"
    (old,) = fed.slurm_ids(held, "jaif")
    jaif = fed.sites["jaif"].cluster

    stopped = time.monotonic()  # the agent renewed the lease at most a round before
    fed.stop_ctld("jaif")
    # jaif has no controller now: a job allowed on jaif or it4lia runs at it4lia
    either = fed.submit(
        fed.spec("jaif-or-it4lia", "echo either on $SLURMD_NODENAME", factories=["jaif", "it4lia"])
    )
    # the job at jaif keeps its place while its lease lasts ...
    while time.monotonic() - stopped < OUTAGE_LEASE_S - 3:
        job = fed.job(held)
        assert (job["state"], job["factory"]) == ("running", "jaif"), job
        time.sleep(0.25)
    # ... and is queued again once it has run out, saying why
    lost = fed.wait_state(held, "queued", timeout=30)
    waited = time.monotonic() - stopped
    assert waited >= OUTAGE_LEASE_S - 2, f"lost {waited:.1f} s after the controller stopped"
    assert lost["factory"] is None
    assert "lost at jaif" in (lost["reason"] or ""), lost

    done = fed.wait_finished(either)
    assert (done["state"], done["factory"]) == ("succeeded", "it4lia")
    assert [r.state for r in settled(fed, "it4lia", either)] == ["COMPLETED"]
    assert fed.job(held)["state"] == "queued"  # nowhere else offers gh200

    fed.start_ctld("jaif")
    agents = poll(
        "jaif's capacity in `fabbrica agent list`",
        lambda: (
            rows
            if (
                rows := {
                    r["factory"]: r for r in fed.cli_json("agent", "list", token=fed.admin_token)
                }
            )
            and rows["jaif"]["capacity"]
            else None
        ),
    )
    assert agents["jaif"]["capacity"][0]["total_gpus"] == jaif.gpus
    # the lost job's Slurm job was still running at jaif: the agent is told to cancel it
    poll(
        f"Slurm job {old} cancelled at jaif",
        lambda: True if [(r.site_job_id, r.state) for r in tagged(fed, "jaif", held)][:1]
        == [(old, "CANCELLED")] else None,
        timeout=60,
    )  # fmt: skip
    assert tagged(fed, "jaif", either) == []
    # placed at jaif again, the lost job runs anew there (its old run's end is not its own)
    again = fed.wait_finished(held, timeout=90)
    assert (again["state"], again["factory"]) == ("succeeded", "jaif"), again
    runs = settled(fed, "jaif", held, count=2)
    assert [(r.site_job_id == old, r.state) for r in runs] == [
        (True, "CANCELLED"),
        (False, "COMPLETED"),
    ]
    log = poll("the second run's log", lambda: t if "again" in (t := fed.logs(held)) else None)
    assert "again" in log
    usage = fed.cli_json("usage", "--by", "project")  # each run charged once, for its time
    assert {r["key"]: r["jobs"] for r in usage} == {fed.project: 2}
    charged = poll(
        "the lost run's charge",
        lambda: j if round((j := fed.job(held))["gpu_hours"] * 3600) > runs[1].gpu_seconds
        else None,
    )  # fmt: skip
    assert round(charged["gpu_hours"] * 3600) == runs[0].gpu_seconds + runs[1].gpu_seconds


# --- 5. accounts and limits -------------------------------------------------------------------


def test_slurm_accounts_follow_the_allocations(federation: Make) -> None:
    grants = {"it4lia": 100.0, "jaif": 50.0, "lumi-aif": 20.0}
    fed = federation(gpu_hours=grants, accounts_every=1)
    for factory, site in fed.sites.items():
        rows = associations(site.cluster, fed.account)
        assert sorted(rows) == sorted(
            [
                (site.cluster.name, fed.account, "", f"gres/gpu={int(grants[factory] * 60)}"),
                (site.cluster.name, fed.account, SITE_USER, ""),
            ]
        ), factory
    jaif = fed.sites["jaif"]

    def check() -> tuple[int, dict[str, Any]]:
        done = fed.cli(
            "agent", "check", "--factory", "jaif", "--slurm-conf", jaif.cluster.slurm_conf,
            "--work-dir", str(jaif.work_dir), "--json", token=jaif.token,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    code, report = check()
    assert (code, report["in_sync"], report["changes"]) == (0, True, [])

    fed.stop_agent("jaif")  # so that nothing puts it back while we look
    jaif.cluster.acct(
        "modify", "account", "where", f"name={fed.account}", f"cluster={jaif.cluster.name}",
        "set", "GrpTRESMins=gres/gpu=5",
    )  # fmt: skip
    jaif.cluster.acct(
        "delete", "user", "where", f"name={SITE_USER}", f"account={fed.account}",
        f"cluster={jaif.cluster.name}",
    )  # fmt: skip
    changed = sorted(associations(jaif.cluster, fed.account))
    assert changed == [("jaif", fed.account, "", "gres/gpu=5")]
    for _ in range(2):  # the check only shows, never changes
        code, report = check()
        assert (code, report["in_sync"]) == (1, False), report
        assert sorted((c["action"], c["detail"]) for c in report["changes"]) == [
            ("add_user", SITE_USER),
            ("set_limit", "GrpTRESMins gres/gpu 5 -> 3,000"),
        ]
        assert sorted(associations(jaif.cluster, fed.account)) == changed

    fed.start_agent("jaif")  # --accounts-every 1: the next syncs put it back
    poll(
        "jaif's account put back by its agent",
        lambda: True if sorted(associations(jaif.cluster, fed.account)) == [
            ("jaif", fed.account, "", "gres/gpu=3000"), ("jaif", fed.account, SITE_USER, "")
        ] else None,
        timeout=30,
    )  # fmt: skip
    code, report = check()
    assert (code, report["in_sync"]) == (0, True)


def test_a_spent_grant_stops_even_direct_sbatch(federation: Make) -> None:
    """A grant of 0.02 GPU-hours is 1 GPU-minute in Slurm: a 1-GPU job of 10 minutes,
    submitted straight to Slurm by a member, waits on the limit; Fabbrica refuses it too."""
    fed = federation(gpu_hours={"it4lia": 100.0, "jaif": 0.02, "lumi-aif": 100.0})
    jaif = fed.sites["jaif"].cluster
    assert ("jaif", fed.account, "", "gres/gpu=1") in associations(jaif, fed.account)

    refused = fed.cli("run", str(fed.spec("too-long", "sleep 1", model="gh200")))
    assert refused.returncode == 2, refused.stdout + refused.stderr

    def sbatch(minutes: int) -> str:
        out = jaif.run(
            ["sbatch", "--parsable", "-A", fed.account, f"--gres=gpu:{jaif.gpu_model}:1",
             "-t", str(minutes), "--chdir=/tmp", "--output=/dev/null", "--wrap", "sleep 1"],
            user=SITE_USER,
        ).stdout  # fmt: skip
        return out.strip().split(";")[0]

    over = sbatch(10)
    poll(
        f"job {over} held by the GPU-minute limit",
        lambda: True if squeue_state(jaif, over) == ("PENDING", "AssocGrpGRESMinutes") else None,
        timeout=30,
    )
    fits = sbatch(1)  # one GPU-minute fits the grant: the limit, not the account, stops `over`
    poll(f"job {fits} to complete", lambda: True if _state(jaif, fits) == "COMPLETED" else None)
    assert squeue_state(jaif, over) == ("PENDING", "AssocGrpGRESMinutes")


def _state(cluster: Any, slurm_id: str) -> str | None:
    found = squeue_state(cluster, slurm_id)
    return found[0] if found else None


def test_an_agent_leaves_another_servers_accounts_alone(federation: Make) -> None:
    """Two Fabbrica servers on one cluster (a staging server beside production, say): the
    second one's agent keeps its own account and never touches the first's."""
    first = federation()
    for factory in first.sites:
        first.stop_agent(factory)  # nothing puts the first's accounts back now
    jaif = first.sites["jaif"].cluster
    before = sorted(associations(jaif, first.account))
    assert len(before) == 2, before
    second = federation(factories=["jaif"], accounts_every=1)
    assert associations(jaif, second.account)
    deadline = time.monotonic() + 15  # some dozen account rounds of the second agent
    while time.monotonic() < deadline:
        assert sorted(associations(jaif, first.account)) == before
        time.sleep(0.5)
    site = second.sites["jaif"]
    done = second.cli(
        "agent", "check", "--factory", "jaif", "--slurm-conf", jaif.slurm_conf,
        "--work-dir", str(site.work_dir), "--json", token=site.token,
    )  # fmt: skip
    assert (done.returncode, json.loads(done.stdout)["changes"]) == (0, [])


# --- logs -------------------------------------------------------------------------------------

BIG_LOG = "yes x | head -c {size}; echo; echo THE-END"


def test_follow_prints_the_whole_log_of_a_job_run_by_an_agent(federation: Make) -> None:
    """3 MiB written at the very end of the job: the agent sends 256 KiB a round, and the
    job counts as ended only once all of it is on the server."""
    fed = federation(factories=["jaif"])
    size = 3 * 1024 * 1024
    spec = fed.spec("big-log", BIG_LOG.format(size=size), model="gh200")
    done = fed.cli("run", str(spec), "--follow")
    assert done.returncode == 0, done.stderr
    assert "THE-END" in done.stdout, f"{len(done.stdout)} bytes printed of {size + 9}"


def test_logs_prints_a_log_longer_than_a_mebibyte(federation: Make) -> None:
    fed = federation(factories=["jaif"])
    size = 3 * 1024 * 1024 // 2
    spec = fed.spec("big-log", BIG_LOG.format(size=size), model="gh200")
    job_id = fed.submit(spec)
    assert fed.wait_finished(job_id)["state"] == "succeeded"
    http = fed.http(fed.user_token)

    def stored() -> int | None:  # what the server holds, read part by part
        offset = 0
        while True:
            part = http.get(f"/jobs/{job_id}/logs", params={"offset": offset})
            if not part.content:
                return offset if offset == size + 9 else None
            offset = int(part.headers["X-Next-Offset"])

    poll("the whole log on the server", stored)
    log = fed.logs(job_id)
    assert log.endswith("THE-END\n"), f"{len(log)} bytes printed of {size + 9}"
