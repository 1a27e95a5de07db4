"""A batch script warned before its time limit (`--signal=B:USR1@<grace>`): Slurm signals
the batch shell alone; the job's shell and the programs it runs must get SIGUSR1, and the
job's exit code stays the command's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from fabbrica.backends.slurm.script import render
from tests.unit.slurm.test_script import make_job

# A job that saves on SIGUSR1 in its shell and in a child program, then runs on: each
# says so, and it ends with its own exit code.
WARNED = r"""
trap 'echo "shell saved at $n" >> "$OUT/said"' USR1
python3 -c '
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: open(sys.argv[1] + "/said", "a").write("child saved\n"))
open(sys.argv[1] + "/ready", "w").close()
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
' "$OUT"
n=1
echo after >> "$OUT/said"
exit 7
"""


def test_a_warned_job_gets_sigusr1_in_its_shell_and_its_programs_and_keeps_its_exit_code(
    tmp_path: Path,
) -> None:
    """Slurm's `--signal=B:USR1@<grace>` signals the batch shell alone: it must not die of
    it, and the job's own processes (its shell, and the program it waits for) must get it."""
    job = make_job(str(tmp_path), command=WARNED, signal_grace_seconds=30, env={})
    path = tmp_path / "job.sh"
    path.write_text(render(job))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OUT": str(tmp_path)}
    with subprocess.Popen(["/bin/bash", str(path)], cwd="/", env=env) as batch:
        for _ in range(3000):  # the program is up and has its handler
            if (tmp_path / "ready").exists() or batch.poll() is not None:
                break
            time.sleep(0.01)
        assert (tmp_path / "ready").exists(), "the job did not start"
        batch.send_signal(signal.SIGUSR1)  # what slurmd does, to the batch shell only
        for _ in range(3000):
            if "child saved" in _said(tmp_path) or batch.poll() is not None:
                break
            time.sleep(0.01)
        (tmp_path / "go").touch()
        code = batch.wait(timeout=60)
    assert code == 7  # the command's, not 128+10: the batch shell lived on
    said = _said(tmp_path).splitlines()
    assert said == ["child saved", "shell saved at ", "after"], said


def _said(where: Path) -> str:
    try:
        return (where / "said").read_text()
    except OSError:
        return ""


def test_an_unwarned_job_is_exec_ed_as_before(tmp_path: Path) -> None:
    script = render(make_job(str(tmp_path)))
    assert "USR1" not in script and "set -m" not in script
    assert script.rstrip("\n").split("\n")[-1].startswith("exec /bin/bash -c $'")
