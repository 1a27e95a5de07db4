"""Templates end to end: `fabbrica up` as a process and the CLI. Listing, showing, bad
parameters (exit 2 naming the parameter, nothing submitted), a job made from one; and,
with FABBRICA_TEST_LLM=1 (slow: PyTorch), llm-pretrain then llm-finetune-lora."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.server import Server, fabbrica, open_for_job_users
from tests.cli.test_jobs_e2e import Cli, startup

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)  # the API is the same
def test_templates_are_listed_checked_and_run(server: Server) -> None:
    cli, project = startup(server)
    listed = cli.run("templates", "--json")
    names = {t["name"] for t in listed}
    assert {"digits-classifier", "llm-pretrain", "llm-finetune-lora"} <= names
    for item in listed:
        assert set(item) >= {"name", "description", "parameters"}
    shown = cli.run("templates", "show", "llm-pretrain").stdout
    assert "steps" in shown and "default 300" in shown
    for args, named in [
        (("--set", "epochs=abc"), "epochs"),
        (("--set", "epochs=0"), "epochs"),
        (("--set", "nope=1"), "nope"),
        (("--set", "time_limit=soon"), "time_limit"),
        (("--set", "epochs"), "name=value"),
    ]:
        result = cli.run("run", "--template", "digits-classifier", *args, code=2)
        assert named in result.stderr, (args, result.stderr)
    for nodes in ("0", "1.5", "65"):
        result = cli.run("run", "--template", "llm-pretrain", "--set", f"nodes={nodes}", code=2)
        assert "nodes" in result.stderr, (nodes, result.stderr)
    refused = cli.run("run", "--template", "llm-finetune-lora", code=2)
    assert "base" in refused.stderr  # required, no default
    assert "no-such" in cli.run("run", "--template", "no-such", code=2).stderr
    cli.run("run", code=2)  # neither a file nor a template
    assert cli.run("jobs", "--json") == []  # nothing was submitted
    job = cli.run("run", "--template", "digits-classifier", "--set", "epochs=30",
                  "--project", project, "--json")  # fmt: skip
    job = cli.run("job", str(job["id"]), "--json")
    for _ in range(600):
        if job["state"] in ("succeeded", "failed", "timed_out", "cancelled"):
            break
        time.sleep(0.2)
        job = cli.run("job", str(job["id"]), "--json")
    log = cli.run("logs", str(job["id"])).stdout
    assert job["state"] == "succeeded" and job["name"] == "digits-classifier", log
    assert "test accuracy" in log
    # two nodes render, but the embedded default's local factory runs one node only
    wide = cli.run("run", "--template", "llm-pretrain", "--set", "nodes=2", "--project",
                   project, code=2)  # fmt: skip
    assert "resources" in wide.stderr and "multi-node" in wide.stderr, wide.stderr


def _slow_run(cli: Cli, *args: str) -> dict[str, Any]:
    """`fabbrica run ... --wait --json` with time for PyTorch (its first install too)."""
    env = cli.server.client_env(cli.token)
    result = fabbrica("run", *args, "--wait", "--json", env=env, timeout=1200)
    assert result.returncode in (0, 1), result.stderr
    job: dict[str, Any] = json.loads(result.stdout)
    return job


LLM_VENV = Path.home() / ".cache/fabbrica/llm-torch-2.13.0"


@pytest.mark.skipif(
    os.environ.get("FABBRICA_TEST_LLM") != "1",
    reason="slow (PyTorch: minutes on a busy machine); FABBRICA_TEST_LLM=1 runs it",
)
@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)
def test_llm_pretrain_then_lora_finetune(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    open_for_job_users(server.data_dir / "jobs")  # as root, jobs run as users of their own
    small = ["--set", "steps=60", "--set", "layers=2", "--set", "width=64", "--set", "heads=2",
             "--set", "seq_len=64", "--set", "batch_size=8"]  # fmt: skip
    pretrained = _slow_run(cli, "--template", "llm-pretrain", *small)
    assert pretrained["state"] == "succeeded", cli.run("logs", str(pretrained["id"])).stdout
    cli.run("download", str(pretrained["id"]), "--to", str(tmp_path / "base"))
    model = tmp_path / "base" / "outputs" / "model"
    assert json.loads((model / "lineage.json").read_text())["steps"] == 60
    cli.run("dataset", "add", str(model), "--name", "tiny-base", "--project", project)
    # as root, the job runs as its own user, who cannot reach what the embedded agent
    # stages in the server's agent/ folder (a known limit, docs/templates.md): open it
    (server.data_dir / "agent").chmod(0o711)
    tuned = _slow_run(cli, "--template", "llm-finetune-lora", "--set", "base=tiny-base",
                      "--set", "steps=40")  # fmt: skip
    log = cli.run("logs", str(tuned["id"])).stdout
    assert tuned["state"] == "succeeded", log
    base, fine = map(float, re.findall(r"base ([\d.]+), fine-tuned ([\d.]+)", log)[0])
    print(f"held-out loss: base {base:.4f}, fine-tuned {fine:.4f}")
    assert fine < base
    cli.run("download", str(tuned["id"]), "--to", str(tmp_path / "tuned"))
    adapter = tmp_path / "tuned" / "outputs" / "adapter"
    lineage = json.loads((adapter / "lineage.json").read_text())
    assert lineage["base_model"]["model"] == "llm-pretrain" and lineage["data"]["sha256"]
    check = (
        "import sys; from peft import PeftModel; from transformers import GPT2LMHeadModel; "
        "m = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(sys.argv[1]), "
        "sys.argv[2]); print(type(m).__name__)"
    )
    # the job's own Python with PEFT: the user's cache, or (a job isolated as its own
    # user) the job's folder
    jobs = server.data_dir / "jobs"
    found = [
        LLM_VENV,
        *sorted(jobs.glob("*/work/.cache/fabbrica/*")),
        *jobs.glob("*/work/.venv-llm"),
    ]
    python = next(p / "bin/python" for p in reversed(found) if (p / "bin/python").exists())
    fresh = subprocess.run(  # a fresh process loads the adapter
        [str(python), "-c", check, str(model), str(adapter)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert fresh.returncode == 0 and "PeftModel" in fresh.stdout, fresh.stderr
