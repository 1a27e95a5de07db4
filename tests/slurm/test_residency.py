"""Data residency on the Slurm testbed: a data set kept in Italy is read by a job allowed
on three factories; the job runs at it4lia only, waits there while it4lia is full and jaif
idle (its reason names the residency), and jaif's agent never receives the bytes: the API
refuses it, and nothing under jaif's directories holds them."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import pytest
import yaml

from tests.slurm.agents import Federation
from tests.slurm.test_agents import Make, federation, settled, tagged

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

__all__ = ["federation"]  # the fixture, imported for the test below


def _dataset(fed: Federation, marker: bytes) -> str:
    folder = fed.root / "scans"
    folder.mkdir()
    (folder / "scan.txt").write_bytes(marker + b"\n")
    name = "scans"
    made = fed.cli_json(
        "dataset", "add", str(folder), "--name", name, "--project", fed.project,
        "--residency", "IT", "--class", "personal",
    )  # fmt: skip
    assert made["name"] == name and made["version"] == 1, made
    return name


def _spec_with_data(fed: Federation, base: Path, dataset: str) -> Path:
    spec = yaml.safe_load(base.read_text())
    spec["datasets"] = [dataset]
    base.write_text(yaml.safe_dump(spec, sort_keys=False))
    return base


def _holding(root: Path, marker: bytes) -> list[Path]:
    """Every file under `root` whose bytes contain `marker`."""
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and marker in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def test_an_italian_data_set_keeps_its_job_in_italy(federation: Make) -> None:
    fed = federation()
    marker = f"residency-marker-{secrets.token_hex(8)}".encode()
    dataset = _dataset(fed, marker)

    # it4lia full: a job holding all its free GPUs
    gpus = fed.sites["it4lia"].cluster.gpus
    blocker = fed.submit(fed.spec("blocker", "sleep 300\n", gpus=gpus, factories=["it4lia"]))
    fed.wait_state(blocker, "running")

    reader = _spec_with_data(
        fed,
        fed.spec(
            "reader",
            f'cat "$FABBRICA_DATA/{dataset}/scan.txt"\n',
            factories=["it4lia", "jaif", "lumi-aif"],
        ),
        dataset,
    )
    job_id = fed.submit(reader)
    waiting = fed.wait_job(
        job_id, lambda j: "IT" in str(j.get("reason") or ""), "waiting for residency"
    )
    assert waiting["state"] == "queued", waiting
    assert waiting["factory"] in (None, "it4lia"), waiting
    assert "residency" in waiting["reason"] or "keeps it to it4lia" in waiting["reason"]
    jaif = fed.agents()["jaif"]["capacity"][0]
    assert jaif["free_gpus"] == jaif["total_gpus"] >= 1, jaif  # jaif idle all along

    # jaif's agent asking for the bytes is refused
    sha = hashlib.sha256(marker + b"\n").hexdigest()
    refused = fed.http(fed.sites["jaif"].token).get(f"/agent/jobs/{job_id}/objects/{sha}")
    assert refused.status_code in (403, 404), refused.text

    done = fed.cli("cancel", str(blocker))
    assert done.returncode == 0, done.stderr
    finished = fed.wait_finished(job_id)
    assert (finished["state"], finished["factory"]) == ("succeeded", "it4lia"), (
        finished,
        fed.logs(job_id),
        fed.output()[-3000:],
    )
    assert marker.decode() in fed.logs(job_id)
    settled(fed, "it4lia", job_id)
    for other in ("jaif", "lumi-aif"):
        assert tagged(fed, other, job_id) == []
        assert _holding(fed.sites[other].work_dir, marker) == []
    assert _holding(fed.sites["it4lia"].work_dir, marker)  # the check can find them
    listed = json.loads(fed.cli("jobs", "--json").stdout)
    assert any(j["id"] == job_id for j in listed)
