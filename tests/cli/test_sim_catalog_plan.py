"""`fabbrica simulate --catalog` with what-ifs, and `fabbrica plan` by candidate, target
and growth, in worker processes and on a local Dask cluster: real processes, no server.

Small traces written to tmp_path, or the first 1,500 Philly rows (tests/data/traces)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fabbrica.catalog import load_catalog
from tests.cli.server import clean_env, fabbrica
from tests.cli.test_simulate import SAMPLE, flat, random_trace, simulate, simulate_json, write_trace

pytestmark = pytest.mark.slow

H = 3600.0


def plan(*args: str) -> Any:
    return fabbrica("plan", *args, env=clean_env(), timeout=180)


def plan_json(*args: str) -> dict[str, Any]:
    result = plan(*args, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- the catalog as the federation -------------------------------------------------------


def test_the_catalog_with_a_gigafactory_names_each_size_and_the_estimates() -> None:
    data = simulate_json(
        "--trace", str(SAMPLE), "--catalog", "--add-factory", "giga-de:100000:gb300:DE",
        "--grow", "it4lia=2", "--policy", "federated",
    )  # fmt: skip
    catalog = load_catalog()
    assert data["federation_source"].startswith("catalog ")
    [point] = data["points"]
    factories = {f["id"]: f for f in point["federation"]["factories"]}
    assert set(factories) == {f.id for f in catalog.factories} | {"giga-de"}
    giga = factories["giga-de"]
    assert (giga["gpus"], giga["gpu_model"], giga["country"]) == (100_000, "gb300", "DE")
    assert giga["estimated"] is False
    assert factories["it4lia"]["gpus"] == 2 * catalog.factories[2].gpus
    assert "x2" in factories["it4lia"]["basis"]
    published = min(f.gpus for f in catalog.factories if f.gpus)
    for factory in catalog.factories:
        entry = factories[factory.id]
        assert entry["estimated"] is factory.gpus_uncertain
        if factory.gpus == 0:  # unpublished: an estimate, and said so
            assert entry["estimated"] is True
            assert entry["gpus"] == published
            assert entry["basis"].startswith("unpublished")
        elif factory.id != "it4lia":
            assert entry["gpus"] == factory.gpus
    assert set(point["federation"]["estimated"]) == {
        i for i, f in factories.items() if f["estimated"]
    }
    assert point["federation"]["gpus"] == sum(f["gpus"] for f in factories.values())
    # every cluster has one home; the largest demand went to the largest factory
    homes = [c for f in factories.values() for c in f["clusters"]]
    assert sorted(homes) == sorted(set(homes)) and len(homes) == 9
    assert giga["clusters"]
    assert point["policies"]["federated"]["jobs"] == 1500
    table = flat(simulate("--trace", str(SAMPLE), "--catalog", "--policy", "pooled").stdout)
    assert "≈23,824" in table and "unpublished" in table


def test_a_catalog_file_and_a_load_rescale_it(tmp_path: Path) -> None:
    trace = random_trace(
        tmp_path / "t.csv", seed=3, jobs=400, clusters=["a", "b"], gpus=[8, 16, 32],
        durations=(6 * H, 24 * H),
    )  # fmt: skip
    shipped = load_catalog().model_dump_json()  # any catalog file: here the shipped one
    path = tmp_path / "cat.yaml"
    path.write_text(shipped, encoding="utf-8")  # JSON is YAML
    data = simulate_json(
        "--trace", str(trace), "--catalog", str(path), "--load", "0.9", "--policy", "federated"
    )
    [point] = data["points"]
    assert str(path) in data["federation_source"]
    assert point["offered_load"] == pytest.approx(0.9, abs=0.02)
    for factory in point["federation"]["factories"]:
        assert factory["given_gpus"] >= factory["gpus"]  # the catalog's size, kept


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--add-factory", "x:10:h100"), "ID:GPUS:MODEL:COUNTRY"),
        (("--add-factory", "x:0:h100:DE"), "GPUS must be"),
        (("--add-factory", "x:ten:h100:DE"), "not a whole number"),
        (("--add-factory", "x:10:h100:Deutschland"), "COUNTRY"),
        (("--add-factory", "X Y:10:h100:DE"), "ID"),
        (("--add-factory", "it4lia:10:h100:IT"), "already exists"),
        (("--grow", "it4lia"), "ID=FACTOR"),
        (("--grow", "it4lia=0"), "FACTOR must be"),
        (("--grow", "it4lia=much"), "not a number"),
        (("--grow", "nowhere=2"), "no factory 'nowhere'"),
    ],
)
def test_bad_what_ifs_exit_2(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    trace = write_trace(tmp_path / "t.csv", ["0,60,1,a"])
    result = simulate("--trace", str(trace), "--catalog", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in flat(result.stderr)
    assert result.stdout == ""


def test_what_ifs_need_a_given_federation_and_one_source(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", ["0,60,1,a"])
    alone = simulate("--trace", str(trace), "--grow", "a=2")
    assert alone.returncode == 2
    assert "--catalog" in flat(alone.stderr)
    fed = tmp_path / "f.json"
    fed.write_text('{"factories": [{"id": "x", "gpus": 4}]}', encoding="utf-8")
    both = simulate("--trace", str(trace), "--catalog", "--federation", str(fed))
    assert both.returncode == 2
    assert "do not go together" in flat(both.stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\n", encoding="utf-8")
    broken = simulate("--trace", str(trace), "--catalog", str(bad))
    assert broken.returncode == 2
    assert "invalid catalog" in flat(broken.stderr)


# --- plan --------------------------------------------------------------------------------


def small_federation(tmp_path: Path) -> tuple[Path, Path]:
    trace = random_trace(
        tmp_path / "t.csv", seed=7, jobs=300, clusters=["a", "a", "b", "c"], gpus=[1, 1, 1, 2]
    )
    fed = tmp_path / "f.csv"
    fed.write_text("id,gpus,country\nx,10,IT\ny,20,DE\nz,8,FR\n", encoding="utf-8")
    return trace, fed


def test_plan_names_gpus_model_and_factory_per_candidate(tmp_path: Path) -> None:
    trace, fed = small_federation(tmp_path)
    args = (
        "--trace", str(trace), "--federation", str(fed), "--target-p95-wait", "1m",
        "--at", "x", "--at", "y", "--model", "h100", "--new", "giga:gb300:DE",
    )  # fmt: skip
    found = plan_json(*args)
    assert found["target"] == {"metric": "p95_wait", "limit": 60.0, "floor": 0.0}
    assert found["base"]["federation_gpus"] == 38
    assert found["base"]["met"] is False
    answers = {a["factory"]: a for a in found["answers"]}
    assert set(answers) == {"x", "y", "giga"}
    assert answers["x"]["gpu_model"] == "h100"
    assert answers["giga"]["new"] is True and answers["giga"]["country"] == "DE"
    for answer in answers.values():
        assert answer["met"] is True
        assert answer["p95_wait"] <= 60
        assert answer["gpus_added"] > answer["known_to_miss_at"]
        assert answer["federation_gpus"] == 38 + answer["gpus_added"]
    assert found["best"]["gpus_added"] == min(a["gpus_added"] for a in answers.values())
    # the answer does not depend on the number of worker processes
    again = plan_json(*args, "--workers", "2")
    assert again["answers"] == found["answers"]
    assert again["workers"] == 2
    table = flat(plan(*args).stdout)
    assert "fewest GPUs meeting the target" in table
    assert "giga (new, DE)" in table and "#" in table


def test_plan_for_grown_demand_a_mean_wait_and_a_utilisation_band(tmp_path: Path) -> None:
    trace, _ = small_federation(tmp_path)
    once = plan_json("--trace", str(trace), "--target-mean-wait", "5m")
    grown = plan_json("--trace", str(trace), "--target-mean-wait", "5m", "--growth", "2")
    assert grown["trace"]["replayed_jobs"] == 600
    assert grown["growth"] == 2
    assert grown["best"]["mean_wait"] <= 300
    assert grown["gpus"] > 1.5 * once["gpus"]
    band = plan_json("--trace", str(trace), "--target-utilisation", "0.5-0.7", "--plot",
                     str(tmp_path / "p.png"))  # fmt: skip
    assert band["target"] == {"metric": "utilisation", "limit": 0.7, "floor": 0.5}
    assert band["best"]["utilisation"] <= 0.7
    assert band["best"]["in_band"] is True
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "exactly one of"),
        (("--target-p95-wait", "1h", "--target-mean-wait", "1h"), "exactly one of"),
        (("--target-mean-wait", "soon"), "--target-mean-wait"),
        (("--target-utilisation", "0.9-0.5"), "LOW-HIGH"),
        (("--target-utilisation", "high"), "LOW-HIGH"),
        (("--target-p95-wait", "1h", "--at", "x"), "need a federation"),
        (("--target-p95-wait", "1h", "--federation", "{fed}", "--at", "w"), "no factory 'w'"),
        (("--target-p95-wait", "1h", "--federation", "{fed}", "--new", "g:DE"), "ID:MODEL"),
        (("--target-p95-wait", "1h", "--federation", "{fed}", "--new", "x:h100:DE"), "exists"),
        (("--target-p95-wait", "1h", "--model", "H 100"), "--model"),
        (("--target-p95-wait", "1h", "--workers", "0"), "--workers"),
        (("--target-p95-wait", "1h", "--growth", "0"), "--growth"),
    ],
)
def test_plan_refuses_bad_questions(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    trace, fed = small_federation(tmp_path)
    result = plan("--trace", str(trace), *(a.format(fed=fed) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in flat(result.stderr)


def test_plan_on_a_local_dask_cluster_gives_the_same_answer(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    trace, fed = small_federation(tmp_path)
    args = ("--trace", str(trace), "--federation", str(fed), "--target-p95-wait", "1m",
            "--at", "x", "--new", "giga:gb300:DE")  # fmt: skip
    here = plan_json(*args)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        dashboard_address=None,
    ) as cluster:
        there = plan_json(*args, "--dask", cluster.scheduler_address)
    assert there["dask"] == cluster.scheduler_address
    assert there["answers"] == here["answers"]
    unreachable = plan(*args, "--dask", "tcp://127.0.0.1:9")
    assert unreachable.returncode == 2
    assert "cannot reach" in flat(unreachable.stderr)
