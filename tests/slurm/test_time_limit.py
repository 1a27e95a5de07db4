"""A job that reaches its time limit on the Slurm testbed with `resume: true`: Slurm warns it
(`#SBATCH --signal=B:USR1@<grace>`), it saves its step in $FABBRICA_CHECKPOINT_DIR on that
signal, Slurm ends it at its time limit (TIMEOUT), Fabbrica queues it again and its second
run starts from the saved step (the step counter goes on) and succeeds; each run is charged
once, what sacct shows for it.

Slurm's shortest time limit is one minute, and slurmctld checks limits (and sends the
warning) every 30 s or so: the test takes about 2 minutes (the first run 60-90 s).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.slurm.agents import Federation
from tests.slurm.conftest import poll
from tests.slurm.test_agents import Make, billed_seconds, federation, settled

__all__ = ["federation"]  # test_agents.py's fixture: one federation per test

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FACTORY = "it4lia"
MORE = 5  # steps the second run does after the saved one
# Counts a step a second; saves the step only when SIGUSR1 comes (never on a schedule, so
# the step the second run starts from is the one saved on the signal). The first run
# counts on until Slurm stops it; a run that starts from a checkpoint ends MORE steps on.
COUNTER = f"""\
ck="$FABBRICA_CHECKPOINT_DIR/step"
step=0 last=1000000
if [ -f "$ck" ]; then
  step=$(cat "$ck") last=$(( $(cat "$ck") + {MORE} ))
  echo "resumed from step $step in slurm job $SLURM_JOB_ID"
else
  echo "started at step 0 in slurm job $SLURM_JOB_ID"
fi
trap 'echo "$step" > "$ck.new" && mv "$ck.new" "$ck" && echo "saved at step $step"' USR1
while [ "$step" -lt "$last" ]; do
  sleep 1 & wait $! || :
  step=$((step + 1))
  echo "step $step"
done
echo "done at step $step"
"""


def counter_spec(fed: Federation) -> Any:
    path = fed.spec("time-limited", COUNTER, time_limit="1m", factories=[FACTORY])
    spec = yaml.safe_load(path.read_text())
    spec.update(checkpoint={"dir": "ckpt/", "every": "10m", "grace": "10s"}, resume=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def log_so_far(fed: Federation, job_id: int) -> str:
    done = fed.cli("logs", str(job_id))
    return done.stdout if done.returncode == 0 else ""


def test_a_job_at_its_time_limit_saves_on_the_signal_and_resumes_in_a_second_run(
    federation: Make,
) -> None:
    fed = federation(factories=[FACTORY])
    job_id = fed.submit(counter_spec(fed))
    first = fed.wait_state(job_id, "running", timeout=120)
    assert (first["factory"], first["run"]) == (FACTORY, 1), first

    # the warning comes before the time limit, while the first run still counts
    saved = poll(
        "the first run to save on the signal",
        lambda: m if (m := re.search(r"^saved at step (\d+)$", log_so_far(fed, job_id), re.M))
        else None,
        timeout=150,
    )  # fmt: skip
    step = int(saved.group(1))
    assert step >= 1

    # the time limit ends it; it is queued again for a second run, charged for the first
    again = fed.wait_job(job_id, lambda j: j["run"] == 2, "to be queued again", timeout=120)
    assert again["state"] in ("queued", "dispatched", "running", "succeeded"), again
    done = fed.wait_finished(job_id, timeout=180)
    assert (done["state"], done["factory"], done["run"]) == ("succeeded", FACTORY, 2), done

    # sacct: two Slurm jobs of this job, the first ended at its time limit
    runs = sorted(settled(fed, FACTORY, job_id, count=2), key=lambda r: int(r.site_job_id))
    assert [r.state for r in runs] == ["TIMEOUT", "COMPLETED"], runs
    first_id, second_id = (r.site_job_id for r in runs)

    # the log keeps both runs: the second starts from the step saved on the signal
    log = poll("the whole log", lambda: t if "done at step" in (t := fed.logs(job_id)) else None)
    assert f"started at step 0 in slurm job {first_id}" in log, log
    assert f"resumed from step {step} in slurm job {second_id}" in log, log
    first_part, _, second_part = log.partition("--- fabbrica: run 2 of this job ---")
    assert second_part, log
    counted = [int(s) for s in re.findall(r"^step (\d+)$", first_part, re.M)]
    assert counted[: step + 1] == list(range(1, step + 2)), log  # it counted on after saving
    resumed = [int(s) for s in re.findall(r"^step (\d+)$", second_part, re.M)]
    assert resumed == list(range(step + 1, step + MORE + 1)), log  # the counter goes on
    assert f"done at step {step + MORE}" in second_part
    assert "saved at step" not in second_part  # no warning: it ended long before its limit

    # each run charged once: its GPUs x its elapsed time as sacct shows them
    records = poll(
        "two usage records",
        lambda: r if len(r := [x for x in fed.usage_records() if x["job_id"] == job_id]) == 2
        else None,
    )  # fmt: skip
    by_run = {r["run"]: r for r in records}
    assert sorted(by_run) == [1, 2], records
    total = 0.0
    for number, slurm in zip((1, 2), runs, strict=True):
        record = by_run[number]
        assert (record["factory_id"], record["site_job_id"]) == (FACTORY, slurm.site_job_id)
        assert (record["gpus"], record["elapsed_s"]) == (slurm.gpus, slurm.elapsed_s), record
        want = billed_seconds(fed, FACTORY, slurm.gpus, slurm.elapsed_s)
        assert round(record["gpu_hours"] * 3600) == round(want), (record, slurm)
        total += want
    assert runs[0].elapsed_s >= 60  # the first ran to its time limit
    assert round(fed.job(job_id)["gpu_hours"] * 3600) == round(total)
