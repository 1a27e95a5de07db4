"""Tracking and the model registry end to end: `fabbrica up` as a process, a real job that
uses the stock `mlflow` client (params, a metric, an artifact, a registered version with an
alias), the lineage Fabbrica records, the model card, and another organisation's user who
can list, read and download none of it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import httpx
import pytest

from tests.api.test_datasets_api import assert_valid_croissant
from tests.cli.server import Server, fabbrica
from tests.cli.test_jobs_e2e import REPO, Cli, startup

pytestmark = pytest.mark.slow


def test_a_job_logs_to_mlflow_registers_a_model_with_its_lineage_and_a_card(
    server: Server, tmp_path: Path
) -> None:
    cli, project = startup(server)
    data = cli.run("dataset", "add", str(REPO / "examples/datasets/digits"), "--name", "digits",
                   "--project", project, "--license", "CC-BY-4.0", "--json")  # fmt: skip
    doc = httpx.get(f"{server.url}/api/v1/datasets/{data['id']}/croissant.json",
                    headers={"Authorization": f"Bearer {cli.token}"}).json()  # fmt: skip
    assert_valid_croissant(doc)
    ran = fabbrica("run", str(REPO / "examples/digits/job-with-data.yaml"), "--project", project,
                   "--wait", "--json", env=server.client_env(cli.token), timeout=300)  # fmt: skip
    job = json.loads(ran.stdout)
    logs = cli.run("logs", str(job["id"])).stdout
    assert job["state"] == "succeeded", logs
    assert "data: the data set digits (1797 images)" in logs and "registered digits@1" in logs

    listed = cli.run("model", "list", "--json")
    assert [(m["name"], m["version"], m["job"]) for m in listed] == [("digits", 1, job["id"])]
    shown = cli.run("model", "show", "digits@1", "--json")
    assert shown["job"] == job["id"] and shown["factory"] == "local" == job["factory"]
    assert shown["gpu_hours"] == pytest.approx(job["gpu_hours"]) and shown["gpu_hours"] > 0
    assert [(d["name"], d["version"]) for d in shown["datasets"]] == [("digits", data["version"])]
    assert shown["metrics"]["accuracy"] > 0.9 and shown["params"]["epochs"] == "200"
    assert shown["aliases"] == ["candidate"] and shown["workdir_sha256"]
    assert shown["spec"]["datasets"] == ["digits"] and shown["compute"]["estimate"] is True
    # by its alias: the same version
    assert cli.run("model", "show", "digits@candidate", "--json")["version"] == 1

    card_path = tmp_path / "card.md"
    cli.run("model", "card", "digits@1", "--to", str(card_path))
    card = card_path.read_text()
    for fact in (f"Training job: {job['id']}", "Factory: local", "| digits | 1 |",
                 f"accuracy: {shown['metrics']['accuracy']:.6g}", "Intended use:",
                 "Limitations", "Training data summary: digits@1", "Training compute:",
                 f"GPU-hours charged: {shown['gpu_hours']}"):  # fmt: skip
        assert fact in card, (fact, card)

    cli.run("model", "download", "digits@1", "--to", str(tmp_path / "m"))
    with (tmp_path / "m" / "model.pkl").open("rb") as handle:
        assert pickle.load(handle).predict([[0.0] * 64]).shape == (1,)

    # another organisation's user: nothing of it, anywhere
    admin = Cli(server)
    other = admin.run("user", "add", "x@other.fr", "--name", "X", "--json")["token"]
    stranger = Cli(server, other)
    stranger.run("org", "add", "O", "--country", "FR", "--type", "sme", "--json")
    assert stranger.run("model", "list", "--json") == []
    for args in (("model", "show", "digits@1"), ("model", "card", "digits@1", "--to", "-"),
                 ("model", "download", "digits@1", "--to", str(tmp_path / "x"))):  # fmt: skip
        refused = stranger.run(*args, code=2)
        assert "no model 'digits'" in refused.stderr, refused.stderr
    assert not (tmp_path / "x").exists()
    base = f"{server.url}/api/v1/models/digits/versions/1"
    for path in ("", "/card", "/files"):
        got = httpx.get(base + path, headers={"Authorization": f"Bearer {other}"})
        assert got.status_code == 404, (path, got.text)
        got = httpx.get(base + path, params={"project": project},
                        headers={"Authorization": f"Bearer {other}"})  # fmt: skip
        assert got.status_code == 404, (path, got.text)


def test_the_stock_mlflow_client_and_another_tenant(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    uri = f"{server.url}/mlflow/{project}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mine = MlflowClient(uri)
    os.environ["MLFLOW_TRACKING_TOKEN"] = cli.token
    try:
        experiment = mine.create_experiment("e")
        run = mine.create_run(experiment)
        mine.log_param(run.info.run_id, "lr", "0.1")
        mine.log_metric(run.info.run_id, "loss", 0.5, step=1)
        note = tmp_path / "note.txt"
        note.write_text("weights")
        mine.log_artifact(run.info.run_id, str(note), "model")
        mine.create_registered_model("m")
        version = mine.create_model_version("m", f"{run.info.artifact_uri}/model", run.info.run_id)
        mine.set_registered_model_alias("m", "champion", version.version)
        assert mine.get_model_version_by_alias("m", "champion").version == "1"
        assert mine.get_run(run.info.run_id).data.params == {"lr": "0.1"}
        assert mine.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        assert [f.path for f in mine.list_artifacts(run.info.run_id, "model")] == ["model/note.txt"]
        with pytest.raises(MlflowException, match="RESOURCE_ALREADY_EXISTS"):
            mine.create_registered_model("m")

        admin = Cli(server)
        other = admin.run("user", "add", "x@other.fr", "--name", "X", "--json")["token"]
        stranger = Cli(server, other)
        org = stranger.run("org", "add", "O", "--country", "FR", "--type", "sme", "--json")
        theirs = stranger.run("project", "add", "Q", "--org", str(org["id"]), "--json")["id"]
        os.environ["MLFLOW_TRACKING_TOKEN"] = other
        for reach in (lambda: mine.get_run(run.info.run_id),
                      lambda: mine.get_experiment(experiment),
                      lambda: mine.search_experiments(),
                      lambda: mine.get_registered_model("m"),
                      lambda: mine.search_model_versions("name='m'"),
                      lambda: mine.get_model_version_by_alias("m", "champion"),
                      lambda: mine.list_artifacts(run.info.run_id),
                      lambda: mine.download_artifacts(run.info.run_id, "model/note.txt",
                                                      str(tmp_path))):  # fmt: skip
            with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
                reach()
        # under their own project's URI: none of ours either
        own = MlflowClient(f"{server.url}/mlflow/{theirs}")
        assert own.search_registered_models() == []
        assert "e" not in [e.name for e in own.search_experiments()]
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
            own.get_run(run.info.run_id)
        got = httpx.get(f"{uri}/api/2.0/mlflow-artifacts/artifacts/{experiment}/"
                        f"{run.info.run_id}/artifacts/model/note.txt",
                        headers={"Authorization": f"Bearer {other}"})  # fmt: skip
        assert got.status_code == 404 and b"weights" not in got.content
        assert not list(tmp_path.glob("**/note.txt"))[1:]  # only ours, nothing downloaded
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
