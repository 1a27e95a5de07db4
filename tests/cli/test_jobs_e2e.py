"""Jobs end to end: `fabbrica up` as a process, the CLI, real processes, kill -9."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.server import Server, fabbrica

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# Which gate each job waits for before it ends: three end while Fabbrica is down (the test
# opens "down" after the kill), two outlive the restart ("up"). Gates, not sleeps: on a busy
# machine a sleep can end before every job has even started.
GATES = ("down", "down", "down", "up", "up")


class Cli:
    def __init__(self, server: Server, token: str = "t") -> None:
        self.server, self.token = server, token

    def run(self, *args: str, code: int = 0) -> Any:
        result = fabbrica(*args, env=self.server.client_env(self.token), timeout=120)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args and code == 0 else result


def startup(server: Server, gpus: int = 4, hours: int = 50) -> tuple[Cli, str]:
    """A startup with a Playground allocation on `local`; returns its CLI and project."""
    python_bin = str(Path(sys.executable).parent)  # the job's `python` has scikit-learn
    server.env.update(
        FABBRICA_LOCAL_GPUS=str(gpus),
        FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
        PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    server.start()
    admin = Cli(server)
    token = admin.run("user", "add", "eng@startup.it", "--name", "Eng", "--json")["token"]
    cli = Cli(server, token)
    org = cli.run("org", "add", "S", "--country", "IT", "--type", "startup", "--json")
    project = cli.run("project", "add", "P", "--org", str(org["id"]), "--json")["id"]
    accepted = cli.run("apply", "--project", project, "--call", "local-playground",
                       "--gpu-hours", str(hours), "--months", "1",
                       "--declare-civilian-ai-act", "--json")  # fmt: skip
    assert accepted["state"] == "accepted"
    return cli, project


def test_the_digits_example_from_spec_to_model(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    # no --project: the user's only project is taken
    job = cli.run("run", str(REPO / "examples/digits/job.yaml"), "--wait", "--json")
    assert job["project"] == project
    assert job["state"] == "succeeded" and job["exit_code"] == 0 and job["factory"] == "local"
    logs = cli.run("logs", str(job["id"])).stdout
    accuracy = float(logs.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.9
    cli.run("download", str(job["id"]), "--to", str(tmp_path / "out"))
    assert (tmp_path / "out" / "outputs" / "model.pkl").stat().st_size > 1000
    started = time.mktime(time.strptime(job["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    ended = time.mktime(time.strptime(job["ended_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert job["gpu_hours"] == pytest.approx(1 * (ended - started) / 3600, abs=2 / 3600)
    (allocation,) = cli.run("allocations", "--json")
    assert allocation["used_gpu_hours"] == pytest.approx(job["gpu_hours"], rel=1e-9)
    assert allocation["reserved_gpu_hours"] == 0
    usage = cli.run("usage", "--by", "factory", "--json")
    assert usage == [{"key": "local", "jobs": 1, "gpu_hours": pytest.approx(job["gpu_hours"])}]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cancel_and_bad_specs_from_the_cli(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    spec = tmp_path / "job.yaml"
    spec.write_text("name: sleeper\nrun: echo started; sleep 120\nresources: {time_limit: 10m}\n")
    job = cli.run("run", str(spec), "--project", project, "--json")
    for _ in range(100):
        if cli.run("job", str(job["id"]), "--json")["state"] == "running":
            break
        time.sleep(0.1)
    running = time.monotonic()
    # Ctrl-C while following: a clean exit 130, the job runs on (issue 10, item 5). The
    # follower gets SIGINT's default disposition, as in a terminal: a test run started in
    # the background of a shell without job control inherits SIGINT ignored, and Python
    # then never turns it into KeyboardInterrupt.
    follower = subprocess.Popen(
        [sys.executable, "-m", "fabbrica", "logs", str(job["id"]), "--follow"],
        env=server.client_env(cli.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    assert follower.stdout is not None
    assert select.select([follower.stdout], [], [], 60)[0]  # following: it printed the log
    assert follower.stdout.readline() == "started\n"
    follower.send_signal(signal.SIGINT)
    _, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 130 and "Traceback" not in stderr, stderr
    assert "runs on" in stderr
    assert cli.run("job", str(job["id"]), "--json")["state"] == "running"
    cancelled = cli.run("cancel", str(job["id"]), "--json")  # returns once stopped
    used = time.monotonic() - running + 10  # seconds, with a margin for the poll above
    assert cancelled["state"] == "cancelled" and cancelled["gpu_hours"] < used / 3600
    for text, field in [("name: x\nrun: y\ncolour: blue\n", "colour"),
                        ("name: x\nrun: y\nresources: {gpus: 0}\n", "resources.gpus"),
                        ("name: x\nrun: y\nresources: {time_limit: forever}\n", "time_limit"),
                        ("name: x\nrun: y\nresources: {nodes: 2}\n", "multi-node"),
                        ("name: x\nrun: y\noutputs: [../../x]\n", "outputs")]:  # fmt: skip
        spec.write_text(text)
        refused = cli.run("run", str(spec), "--project", project, code=2)
        assert field in refused.stderr
    assert len(cli.run("jobs", "--json")) == 1


def test_kill_9_then_restart_runs_nothing_twice_and_charges_once(server: Server) -> None:
    cli, project = startup(server, gpus=8)
    gates = server.data_dir.parent / "gates"
    gates.mkdir()
    gates.chmod(0o755)  # job users (fab-u<id>, when root) look for the gates here
    ids: list[int] = []
    for gate in GATES:
        spec = Path(server.data_dir.parent / f"job{len(ids)}.yaml")
        spec.write_text(f"name: j{len(ids)}\nrun: echo start >> outputs/runs; "
                        f"until [ -e {gates / gate} ]; do sleep 0.2; done; sleep 1; "
                        "echo end >> outputs/runs\nresources: {time_limit: 10m}\n")  # fmt: skip
        ids.append(cli.run("run", str(spec), "--project", project, "--json")["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = {j["id"]: j["state"] for j in cli.run("jobs", "--json")}
        if all(states[i] == "running" for i in ids):
            break
        time.sleep(0.2)
    assert all(states[i] == "running" for i in ids), states
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    (gates / "down").touch()
    runs = server.data_dir / "jobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the short jobs end while Fabbrica is down
        ended = [(runs / f"fab-{i}" / "status" / "exit_code").exists()
                 or (runs / f"fab-{i}" / "exit_code").exists() for i in ids]  # fmt: skip
        if ended == [gate == "down" for gate in GATES]:
            break
        time.sleep(0.2)
    assert ended == [gate == "down" for gate in GATES]
    server.start()
    (gates / "up").touch()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in cli.run("jobs", "--json")}
        if all(jobs[i]["state"] == "succeeded" for i in ids):
            break
        time.sleep(0.2)
    assert [jobs[i]["state"] for i in ids] == ["succeeded"] * 5
    for i in ids:  # each ran exactly once, to the end
        assert (runs / f"fab-{i}" / "work" / "outputs" / "runs").read_text() == "start\nend\n"
    usage = cli.run("usage", "--json")
    assert usage[0]["jobs"] == 5
    charged = sum(jobs[i]["gpu_hours"] for i in ids)
    assert usage[0]["gpu_hours"] == pytest.approx(charged)
    (allocation,) = cli.run("allocations", "--json")
    assert allocation["used_gpu_hours"] == pytest.approx(charged)
    assert allocation["reserved_gpu_hours"] == pytest.approx(0, abs=1e-9)
    for i in ids:  # charged for the real run time: at least the final second of each
        assert jobs[i]["gpu_hours"] >= 1 / 3600


def test_an_emulated_federation_places_by_residency_and_model(
    server: Server, tmp_path: Path
) -> None:
    server.env["FABBRICA_EMULATE_FEDERATION"] = "true"
    cli, project = startup(server)
    listed = {f["id"]: f for f in cli.run("catalog", "--json")}
    assert listed["jaif"]["emulated"] and listed["it4lia"]["emulated"]
    assert not listed["ai-at"]["emulated"]  # no operating partition to stand in for
    for call in ("jaif-playground", "it4lia-playground"):
        cli.run("apply", "--project", project, "--call", call, "--gpu-hours", "50",
                "--months", "1", "--declare-civilian-ai-act", "--json")  # fmt: skip
    spec = tmp_path / "de.yaml"
    spec.write_text("name: de\nrun: sleep 30\nresources: {gpus: 4, time_limit: 5m}\n"
                    "placement: {countries: [DE]}\n")  # fmt: skip
    first = cli.run("run", str(spec), "--project", project, "--json")
    second = cli.run("run", str(spec), "--project", project, "--json")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in cli.run("jobs", "--json")}
        if jobs[first["id"]]["state"] == "running" and jobs[second["id"]]["reason"]:
            break
        time.sleep(0.2)
    assert jobs[first["id"]]["state"] == "running" and jobs[first["id"]]["factory"] == "jaif"
    waiting = jobs[second["id"]]
    assert waiting["state"] == "queued"
    assert "earliest estimated start" in waiting["reason"] and "jaif" in waiting["reason"]
    spec.write_text("name: a100\nrun: 'true'\nresources: {gpu_model: a100}\n"
                    "placement: {countries: [DE]}\n")  # fmt: skip
    refused = cli.run("run", str(spec), "--project", project, code=2)
    assert "no allowed factory offers a100 GPUs" in refused.stderr
    for job in (first, second):
        cli.run("cancel", str(job["id"]))


def test_follow_streams_the_output_and_big_workdirs_are_refused(
    server: Server, tmp_path: Path
) -> None:
    server.env["FABBRICA_UPLOAD_MAX_BYTES"] = "20000"
    cli, project = startup(server)
    spec = tmp_path / "job.yaml"
    spec.write_text("name: hi\nrun: echo hello-from-the-job\n")
    followed = cli.run("run", str(spec), "--follow")
    assert "hello-from-the-job" in followed.stdout
    # outputs holding an absolute symlink: no traceback, nothing half extracted (finding 8)
    links = tmp_path / "links" / "job.yaml"  # its own folder: tmp_path holds the server's data
    links.parent.mkdir()
    links.write_text("name: links\noutputs: [outputs/]\nrun: mkdir -p outputs && echo hi > "
                     "outputs/a.txt && ln -s /etc/passwd outputs/passwd\n")  # fmt: skip
    linked = cli.run("run", str(links), "--project", project, "--wait", "--json")
    into = tmp_path / "linked"
    result = fabbrica("download", str(linked["id"]), "--to", str(into),
                      env=server.client_env(cli.token))  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:  # the server left the link out of the archive
        assert not (into / "outputs" / "passwd").is_symlink()
    else:
        assert result.returncode == 1 and "outputs/passwd" in result.stderr
        assert not into.exists()
    (tmp_path / "big.bin").write_bytes(os.urandom(100_000))
    refused = cli.run("run", str(spec), "--project", project, code=2)
    assert "over the limit of 20,000 bytes" in refused.stderr
    assert len(cli.run("jobs", "--json")) == 2  # hi and links
