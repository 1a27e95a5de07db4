"""The notebook's spec (core) and the launcher's idle rule, with plain values."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from fabbrica.backends.notebook import idle_end, is_idle
from fabbrica.core.jobspec import SpecError
from fabbrica.core.notebooks import NotebookRequest, is_notebook, notebook_spec, proxy_path


def test_the_spec_of_a_notebook() -> None:
    spec = notebook_spec(NotebookRequest("P-1", "local", 2, 1.5, ("digits",)), idle_s=30)
    assert spec.name == "notebook" and spec.project == "P-1" and is_notebook(spec)
    assert spec.resources.gpus == 2 and spec.resources.time_limit == 5400
    assert spec.placement.factories == ("local",) and spec.datasets == ("digits",)
    assert proxy_path(42) == "/notebooks/42/"
    # the shell gives the launcher the proxy path of the job id the executor sets
    line = spec.run.replace("exec python -m fabbrica.backends.notebook", "echo")
    shown = subprocess.run(
        ["bash", "-c", line], env={"FABBRICA_JOB_ID": "fab-42"}, capture_output=True, text=True
    )
    assert shown.stdout.split() == [
        "--idle", "30", "--limit", "5400", "--base-url", "/notebooks/42/"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (NotebookRequest(gpus=0), "resources.gpus"),
        (NotebookRequest(factory="Not A Slug"), "placement.factories.0"),
        (NotebookRequest(datasets=("a", "a")), "datasets"),
        (NotebookRequest(hours=24 * 15), "resources.time_limit"),
    ],
)
def test_bad_requests_name_the_field(request_: NotebookRequest, field: str) -> None:
    with pytest.raises(SpecError) as raised:
        notebook_spec(request_, idle_s=60)
    assert raised.value.field == field


def _ago(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).isoformat()


def test_idle_means_no_client_no_kernel_and_nothing_for_the_idle_time() -> None:
    assert is_idle({"connections": 0, "kernels": 0, "last_activity": _ago(31)}, 30)
    assert not is_idle({"connections": 0, "kernels": 0, "last_activity": _ago(29)}, 30)
    assert not is_idle({"connections": 1, "kernels": 0, "last_activity": _ago(99)}, 30)
    assert not is_idle({"connections": 0, "kernels": 1, "last_activity": _ago(99)}, 30)
    assert is_idle({"connections": 0, "kernels": 0, "last_activity": "2020-01-01T00:00:00Z"}, 30)


def test_the_idle_end_is_the_idle_time_after_the_last_activity_with_no_client() -> None:
    last = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
    status = {"connections": 0, "kernels": 1, "last_activity": "2026-12-01T03:00:00Z"}
    assert idle_end(status, 600) == last + dt.timedelta(seconds=600)
    assert idle_end({**status, "connections": 1}, 600) is None  # an open notebook stays
