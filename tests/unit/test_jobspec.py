from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabbrica.core.jobspec import SpecError, is_inside, parse_duration, parse_job_spec

GOOD = """
name: digits-classifier
project: FAB-AIF-2026PG11-0007
resources: {gpus: 1, gpu_model: any, nodes: 1, cpus_per_gpu: 4, time_limit: 30m}
placement: {factories: [it4lia, jaif], countries: [it, DE]}
workdir: .
setup: pip install -r requirements.txt
run: python train.py
env: {EPOCHS: 3, DEBUG: true}
outputs: [outputs/]
"""


def test_the_issue_example_parses() -> None:
    spec = parse_job_spec(GOOD)
    assert spec.name == "digits-classifier"
    assert spec.resources.gpu_model is None and spec.resources.time_limit == 1800
    assert spec.placement.countries == ("IT", "DE")
    assert spec.env == {"EPOCHS": "3", "DEBUG": "true"}
    assert spec.outputs == ("outputs/",)


def test_gpus_are_per_node() -> None:
    spec = parse_job_spec("name: j\nrun: torchrun train.py\nresources: {gpus: 4, nodes: 2}\n")
    assert (spec.resources.gpus, spec.resources.nodes, spec.resources.total_gpus) == (4, 2, 8)
    biggest = parse_job_spec("name: j\nrun: x\nresources: {gpus: 16, nodes: 1024}\n")
    assert biggest.resources.total_gpus == 16_384


def test_json_is_yaml_too() -> None:
    spec = parse_job_spec('{"name": "j", "run": "true", "resources": {"time_limit": "2h"}}')
    assert spec.resources.time_limit == 7200


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("90s", 90),
     ("01:30:00", 5400), ("2-00:00", 2 * 86400), ("45", 2700), (45, 2700), ("1H 30M", 5400)],
)  # fmt: skip
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("colour: blue", "colour"),
        ("resources: {gpus: 0}", "resources.gpus"),
        ("resources: {gpus: 100000}", "resources.gpus"),
        ("resources: {time_limit: forever}", "resources.time_limit"),
        ("resources: {time_limit: 30d}", "resources.time_limit"),
        ("resources: {time_limit: 0m}", "resources.time_limit"),
        ("outputs: [../../etc]", "outputs"),
        ("outputs: [/etc/passwd]", "outputs"),
        ("placement: {countries: [Italy]}", "placement.countries.0"),
        ("placement: {factories: []}", "placement.factories"),
        ("env: {'1BAD': x}", "env.1BAD.[key]"),
        ("name: Not A Slug", "name"),
        ("resources: {gpus: 16, nodes: 1025}", "resources.nodes"),
        ("resources: {gpus: 17, nodes: 1024}", "resources.nodes"),  # 17,408 GPUs in all
    ],
)
def test_bad_specs_name_the_field(change: str, field: str) -> None:
    base = "name: j\nrun: python train.py\n"
    key = change.split(":")[0]
    text = "\n".join(line for line in base.splitlines() if not line.startswith(key + ":"))
    with pytest.raises(SpecError) as info:
        parse_job_spec(text + "\n" + change)
    assert info.value.field == field, info.value


def test_missing_run_and_bad_files() -> None:
    with pytest.raises(SpecError) as info:
        parse_job_spec("name: j")
    assert info.value.field == "run"
    with pytest.raises(SpecError, match="bytes; the limit"):
        parse_job_spec("name: j\nrun: x\n#" + "x" * 50_000_000)
    with pytest.raises(SpecError, match="nested"):
        parse_job_spec("name: j\nrun: x\nenv: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(SpecError, match="nested deeper"):
        parse_job_spec("name: j\nrun: x\nx: " + "[" * 40 + "]" * 40)
    with pytest.raises(SpecError, match="at line 3, column 1: not valid YAML"):
        parse_job_spec("name: j\nrun: [unclosed")
    with pytest.raises(SpecError, match="mapping"):
        parse_job_spec("- a list")
    with pytest.raises(SpecError, match="UTF-8"):
        parse_job_spec(b"name: j\nrun: \xff")


@pytest.mark.parametrize(
    ("path", "inside"),
    [("outputs/", True), ("a/../b", True), ("./x", True), ("a/../../b", False),
     ("..", False), ("/abs", False), ("~/x", False), ("a\\..\\..\\b", False)],
)  # fmt: skip
def test_is_inside(path: str, inside: bool) -> None:
    assert is_inside(path) is inside


@given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=8))
def test_is_inside_agrees_with_a_resolved_path(parts: list[str]) -> None:
    depth, escaped = 0, False
    for part in parts:
        depth += {"..": -1, ".": 0}.get(part, 1)
        escaped = escaped or depth < 0
    assert is_inside("/".join(parts)) is not escaped
