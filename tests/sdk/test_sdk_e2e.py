"""The Python SDK against a real `fabbrica up`: `from fabbrica import Client`, no CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabbrica import ApiError, Client, JobSpecError
from fabbrica.client import UploadProgress
from tests.cli.server import Server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def startup(server: Server, request: pytest.FixtureRequest) -> Iterator[tuple[Client, str]]:
    """A startup of its own (one per test) with a Playground allocation on `local`, made
    through the SDK alone; its client is closed after the test."""
    with Client(server.url, "t") as admin:
        token = admin.create_user(f"{request.node.name[:40]}@startup.it", "Eng")["token"]
    with Client(server.url, token) as fab:
        org = fab.create_organisation("S", country="IT", type="startup")
        project = fab.create_project("P", org_id=org["id"])["id"]
        proposal = fab.apply(project=project, call="local-playground", gpu_hours=50, months=1,
                             declare_civilian_ai_act=True)  # fmt: skip
        assert proposal["state"] == "accepted"
        yield fab, project


def test_the_sdk_submits_the_digits_example_waits_reads_logs_and_downloads(
    startup: tuple[Client, str], tmp_path: Path
) -> None:
    fab, project = startup
    sent: list[UploadProgress] = []
    job = fab.submit(REPO / "examples/digits/job.yaml", progress=sent.append)
    assert job["project"] == project and job["name"] == "digits-classifier"
    assert sent[-1].sent == sent[-1].total > 0 and sent[-1].workdir == REPO / "examples/digits"
    done = fab.wait(job["id"], timeout=300)
    assert done["state"] == "succeeded" and done["exit_code"] == 0 and done["factory"] == "local"
    logs = fab.logs(job["id"])
    assert float(logs.split("test accuracy:")[1].split()[0]) > 0.9
    assert "".join(fab.follow(job["id"])) == logs  # a finished job: all of it, then the end
    got = fab.download(job["id"], tmp_path / "out")
    assert got.folder == tmp_path / "out" and "outputs/model.pkl" in got.names
    assert (tmp_path / "out" / "outputs" / "model.pkl").stat().st_size > 1000
    assert fab.jobs() == [done]
    usage = fab.usage("factory")
    assert usage == [{"key": "local", "jobs": 1, "gpu_hours": pytest.approx(done["gpu_hours"])}]
    (allocation,) = fab.allocations()
    assert allocation["used_gpu_hours"] == pytest.approx(done["gpu_hours"])


def test_follow_yields_the_output_while_the_job_runs_and_cancel_stops_it(
    startup: tuple[Client, str], tmp_path: Path
) -> None:
    fab, project = startup
    spec = {"name": "talk", "run": "for i in 1 2 3; do echo line-$i; sleep 1; done"}
    job = fab.submit(spec, project=project, workdir=tmp_path)
    pieces = [(time.monotonic(), text) for text in fab.follow(job["id"], poll=0.1)]
    assert "".join(t for _, t in pieces).split() == ["line-1", "line-2", "line-3"]
    assert pieces[-1][0] - pieces[0][0] > 1.0  # streamed as it came, not at the end
    assert fab.job(job["id"])["state"] == "succeeded"
    sleeper = fab.submit({"name": "sleeper", "run": "sleep 120"}, upload=False)
    assert sleeper["project"] == project  # the user's only project
    fab.cancel(sleeper["id"])
    assert fab.wait(sleeper["id"], timeout=10)["state"] == "cancelled"


def test_refusals_raise_errors_that_carry_the_status_code_and_field(
    startup: tuple[Client, str], tmp_path: Path
) -> None:
    fab, project = startup
    with pytest.raises(ApiError) as refused:
        fab.apply(project=project, call="local-playground", gpu_hours=10, months=0,
                  declare_civilian_ai_act=True)  # fmt: skip
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        422,
        "invalid",
        "months",
    )
    assert str(refused.value).startswith("months: ") and str(refused.value).endswith("(HTTP 422)")
    with pytest.raises(ApiError) as missing:
        fab.job(999_999)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    # the server's own check of a spec, sent without the local one in the way
    with pytest.raises(ApiError) as bad_spec:
        fab._json("POST", "/jobs", json={"spec": {"name": "x", "run": "y", "colour": "blue"}})
    assert (bad_spec.value.status, bad_spec.value.field) == (422, "spec.colour")
    with pytest.raises(JobSpecError) as local:  # checked here, nothing sent
        fab.submit({"name": "x", "run": "y", "resources": {"gpus": 0}}, workdir=tmp_path)
    assert local.value.field == "resources.gpus"
    with pytest.raises(ApiError) as forbidden:
        fab.users()  # admins only
    assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
    assert fab.jobs() == []  # nothing was submitted
