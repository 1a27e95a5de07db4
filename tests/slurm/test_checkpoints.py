"""Checkpoints that follow a job across sites, on the Slurm testbed: a job with `resume: true`
runs at jaif, jaif's controller stops mid-run, the job is lost after the lease, queued again
and resumes at it4lia from the last checkpoint jaif's agent sent (its step counter goes
on); both runs are charged, once each, what sacct shows at each cluster.

With FABBRICA_TEST_LLM=1 (and `fabbrica[llm]` installed: PyTorch, transformers) the same
with the `llm-pretrain` template, as the issue asks; without it, a shell job that counts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.slurm.agents import Federation
from tests.slurm.conftest import poll
from tests.slurm.test_agents import OUTAGE_LEASE_S, Make, billed_seconds, federation, settled

__all__ = ["federation"]  # test_agents.py's fixture: one federation per test

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 40
COUNTER = f"""\
ck="$FABBRICA_CHECKPOINT_DIR/step"
step=0
if [ -f "$ck" ]; then step=$(cat "$ck"); echo "resumed from step $step at $SLURM_CLUSTER_NAME"; fi
while [ "$step" -lt {STEPS} ]; do
  sleep 1
  step=$((step + 1))
  echo "$step" > "$ck.new" && mv "$ck.new" "$ck"
  echo "step $step at $SLURM_CLUSTER_NAME"
done
echo "done at $SLURM_CLUSTER_NAME"
"""


def with_checkpoint(path: Path, **extra: Any) -> Path:
    """The spec at `path`, checkpointing to `ckpt/` and resuming (and `extra`)."""
    spec = yaml.safe_load(path.read_text())
    spec.update(checkpoint={"dir": "ckpt/", "every": "1m", "grace": "30s"}, resume=True, **extra)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def log_so_far(fed: Federation, job_id: int) -> str:
    """The job's log, "" while the server has none yet."""
    done = fed.cli("logs", str(job_id))
    return done.stdout if done.returncode == 0 else ""


def lost_and_resumed(
    fed: Federation, submit: Callable[[], int], started: str, *, slow: float = 1.0
) -> tuple[int, str]:
    """Submit a job while it4lia and lumi-aif are full (so it runs at jaif), stop jaif's
    controller once its log shows `started`, and let it resume at it4lia. The job's id and
    its log at it4lia. (`slow`: how many times longer it may take.)"""
    blockers = {
        factory: fed.submit(fed.spec(f"{factory}-full", "sleep 900", gpus=4, factories=[factory]))
        for factory in ("it4lia", "lumi-aif")
    }
    for factory, blocker in blockers.items():
        assert fed.wait_state(blocker, "running")["factory"] == factory
    job_id = submit()
    assert fed.wait_state(job_id, "running", timeout=120 * slow)["factory"] == "jaif"
    poll(
        f"{started!r} in the log at jaif",
        lambda: True if started in log_so_far(fed, job_id) else None,
        timeout=120 * slow,
    )
    fed.stop_ctld("jaif")
    lost = fed.wait_state(job_id, "queued", timeout=OUTAGE_LEASE_S + 40)
    assert "lost at jaif" in (lost["reason"] or ""), lost
    assert fed.cli("cancel", str(blockers["it4lia"])).returncode == 0
    resumed = fed.wait_state(job_id, "running", timeout=90)
    assert resumed["factory"] == "it4lia", resumed
    fed.start_ctld("jaif")  # the run it lost is still there: stopped, and charged
    done = fed.wait_finished(job_id, timeout=300 * slow)
    assert (done["state"], done["factory"]) == ("succeeded", "it4lia"), done
    assert fed.cli("cancel", str(blockers["lumi-aif"])).returncode == 0
    return job_id, fed.logs(job_id)


def charged_once_per_run(fed: Federation, job_id: int) -> None:
    """Two usage records, one per run (jaif's lost one, it4lia's), each what sacct shows."""
    (at_jaif,) = settled(fed, "jaif", job_id)
    (at_it4lia,) = settled(fed, "it4lia", job_id)
    records = poll(
        "the lost run's charge",
        lambda: r if len(r := [x for x in fed.usage_records() if x["job_id"] == job_id]) == 2
        else None,
        timeout=90,
    )  # fmt: skip
    by_site = {(r["factory_id"], r["site_job_id"]): r for r in records}
    assert sorted(by_site) == [("it4lia", at_it4lia.site_job_id), ("jaif", at_jaif.site_job_id)]
    total = 0.0
    for factory, run in (("jaif", at_jaif), ("it4lia", at_it4lia)):
        record = by_site[(factory, run.site_job_id)]
        assert record["gpus"] * record["elapsed_s"] == run.gpu_seconds, (factory, record, run)
        want = billed_seconds(fed, factory, run.gpus, run.elapsed_s)
        assert round(record["gpu_hours"] * 3600) == round(want), (factory, record, run)
        total += want
    assert round(fed.job(job_id)["gpu_hours"] * 3600) == round(total)


def test_a_lost_job_resumes_at_another_factory_from_its_last_checkpoint(
    federation: Make,
) -> None:
    fed = federation(lease_s=OUTAGE_LEASE_S)
    spec = with_checkpoint(fed.spec("counter", COUNTER, factories=["jaif", "it4lia"]))
    stopped = time.monotonic()
    job_id, log = lost_and_resumed(fed, lambda: fed.submit(spec), "step 3 at jaif")
    match = re.search(r"resumed from step (\d+) at it4lia", log)
    assert match is not None, log
    start = int(match.group(1))
    assert start >= 3, log  # not from 0: from what jaif's agent last sent
    steps = [int(s) for s in re.findall(r"^step (\d+) at it4lia$", log, re.M)]
    assert steps == list(range(start + 1, STEPS + 1)), log  # the counter goes on
    assert "done at it4lia" in log
    charged_once_per_run(fed, job_id)
    assert time.monotonic() - stopped < 240


@pytest.mark.skipif(
    not os.environ.get("FABBRICA_TEST_LLM"), reason="set FABBRICA_TEST_LLM=1 (needs fabbrica[llm])"
)
def test_llm_pretrain_lost_at_jaif_resumes_at_it4lia(federation: Make) -> None:
    fed = federation(lease_s=OUTAGE_LEASE_S)
    small = ["--set", "steps=150", "--set", "layers=2", "--set", "width=64", "--set", "heads=2",
             "--set", "seq_len=64", "--set", "batch_size=8", "--set", "step_delay=0.2",
             "--set", "checkpoint_every=5s"]  # fmt: skip

    def submit() -> int:
        made = fed.cli_json("run", "--template", "llm-pretrain", *small, "--project", fed.project)
        return int(made["id"])

    job_id, log = lost_and_resumed(fed, submit, "checkpoint saved at step", slow=5)
    match = re.search(r"resuming from step (\d+)", log)
    assert match is not None and int(match.group(1)) > 0, log  # not from 0
    steps = [int(s) for s in re.findall(r"^step (\d+) loss", log, re.M)]
    assert steps and steps[0] > int(match.group(1)) and steps[-1] == 150, log
    charged_once_per_run(fed, job_id)
