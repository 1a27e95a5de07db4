"""The job page's outputs: names found by walking the tree (no file read, no archive
packed), one file opened alone; both agree with the all-outputs archive, and neither
follows a link or leaves the job's tree."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from fabbrica.core.archives import ArchiveLimits
from fabbrica.core.errors import NotFound, TooLarge
from fabbrica.core.jobspec import spec_from_data
from fabbrica.services import job_files

SPEC = spec_from_data({"name": "t", "run": "true", "outputs": ["runs/best", "model.pkl"]})


@pytest.fixture
def job(tmp_path: Path) -> Path:
    work = tmp_path / "job" / "work"
    (work / "outputs" / "plots").mkdir(parents=True)
    (work / "outputs" / "metrics.json").write_text("{}")
    (work / "outputs" / "plots" / "loss.svg").write_text("<svg/>")
    (work / "runs" / "best").mkdir(parents=True)
    (work / "runs" / "best" / "weights.bin").write_bytes(b"w" * 1000)
    (work / "runs" / "other.bin").write_bytes(b"not an output")
    (work / "model.pkl").write_bytes(b"m" * 2000)
    (tmp_path / "secret.txt").write_text("outside the job")
    os.symlink(tmp_path / "secret.txt", work / "outputs" / "leak.txt")
    os.symlink(tmp_path, work / "outputs" / "up")
    os.mkfifo(work / "outputs" / "pipe")
    return tmp_path / "job"


def archived(job: Path) -> set[str]:
    data = job_files.outputs_archive(job, SPEC, ArchiveLimits())
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def test_names_are_the_archives_files(job: Path) -> None:
    names = job_files.output_names(job, SPEC, ArchiveLimits())
    assert (
        set(names)
        == archived(job)
        == {
            "outputs/metrics.json",
            "outputs/plots/loss.svg",
            "runs/best/weights.bin",
            "model.pkl",
        }
    )
    with pytest.raises(TooLarge):
        job_files.output_names(job, SPEC, ArchiveLimits(max_entries=3))


def test_one_output_is_opened_alone_and_nothing_else_is(job: Path) -> None:
    for name in job_files.output_names(job, SPEC, ArchiveLimits()):
        with job_files.open_output(job, SPEC, name) as opened:
            assert opened.read() == (job / "work" / name).read_bytes()
    for name in ("runs/other.bin", "outputs/leak.txt", "outputs/up/secret.txt", "outputs/pipe",
                 "outputs/../model.pkl", "/etc/passwd", "outputs/plots", "outputs//metrics.json",
                 "../secret.txt", "outputs/missing"):  # fmt: skip
        with pytest.raises(NotFound):
            job_files.open_output(job, SPEC, name)
