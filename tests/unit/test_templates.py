"""Job templates: the shipped ones parse, every parameter is checked with errors naming it,
and any values a template accepts render a spec that the job spec's own parser accepts."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabbrica.core.jobspec import parse_job_spec
from fabbrica.core.templates import (
    Parameter,
    Template,
    TemplateError,
    parse_template,
    render,
    validate_values,
)
from fabbrica.services.templates import SHIPPED as SHIPPED_DIR
from fabbrica.services.templates import Templates, workdir_archive

SHIPPED = {f.template.name: f.template for f in Templates().listed()}
NAMES = sorted(SHIPPED)


def test_the_three_templates_ship() -> None:
    assert {"digits-classifier", "llm-pretrain", "llm-finetune-lora"} <= set(SHIPPED)


def _bad_values(parameter: Parameter) -> list[Any]:
    """Values the parameter must refuse."""
    if parameter.type in ("int", "float"):
        bad: list[Any] = ["x", "1e999" if parameter.type == "float" else "1.5"]
        if parameter.min is not None:
            bad.append(str(parameter.min - 1))
        if parameter.max is not None:
            bad.append(str(parameter.max + 1))
        return bad
    if parameter.type == "bool":
        return ["maybe", "2"]
    if parameter.type == "duration":
        return ["soon", "0", "-5m"]
    bad = ["a\x00b", "x" * 5000]
    if parameter.pattern is not None:
        bad.append("no spaces allowed ; rm -rf /")
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_refuses_bad_values_naming_itself(name: str) -> None:
    template = SHIPPED[name]
    required = _required(template)
    for pname, parameter in template.parameters.items():
        for value in _bad_values(parameter):
            with pytest.raises(TemplateError) as caught:
                validate_values(template, {**required, pname: value})
            assert caught.value.field == f"parameters.{pname}", (pname, value)
            assert pname in str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_missing_parameters_are_named(name: str) -> None:
    template = SHIPPED[name]
    with pytest.raises(TemplateError) as caught:
        validate_values(template, {**_required(template), "no_such": "1"})
    assert caught.value.field == "parameters.no_such"
    for pname, parameter in template.parameters.items():
        if parameter.required:
            rest = {k: v for k, v in _required(template).items() if k != pname}
            with pytest.raises(TemplateError) as caught:
                validate_values(template, rest)
            assert caught.value.field == f"parameters.{pname}"


def _required(template: Template) -> dict[str, Any]:
    """A valid value for each required parameter."""
    return {n: "base-model" for n, p in template.parameters.items() if p.required}


def _value(parameter: Parameter) -> st.SearchStrategy[Any]:
    """Values within the parameter's declared type and limits, as text or typed."""
    low, high = parameter.min, parameter.max
    if parameter.type == "int":
        ints = st.integers(int(low) if low is not None else -(10**6), int(high or 10**6))
        return ints | ints.map(str)
    if parameter.type == "float":
        floats = st.floats(low if low is not None else -1e6, high or 1e6, allow_nan=False)
        return floats | floats.map(repr)
    if parameter.type == "bool":
        return st.sampled_from([True, False, "true", "false", "1", "0", "yes", "no"])
    if parameter.type == "duration":
        return st.integers(1, 14 * 86400).map(lambda s: f"{s}s") | st.sampled_from(
            ["30m", "2h", "1h30m", "01:00:00", "1d"]
        )
    if parameter.choices:
        return st.sampled_from(parameter.choices)
    if parameter.pattern is not None:
        return st.from_regex(parameter.pattern, fullmatch=True)
    return st.text(max_size=50)


@st.composite
def _values(draw: st.DrawFn, template: Template) -> dict[str, Any]:
    chosen = {}
    for name, parameter in template.parameters.items():
        if parameter.required or draw(st.booleans()):
            chosen[name] = draw(_value(parameter))
    return chosen


@pytest.mark.parametrize("name", NAMES)
def test_accepted_parameters_render_a_valid_job_spec(name: str) -> None:
    template = SHIPPED[name]

    @settings(max_examples=25, deadline=None)
    @given(_values(template))
    def check(values: dict[str, Any]) -> None:
        try:
            rendered = render(template, values)
        except TemplateError as exc:  # refused: always naming a parameter
            assert exc.field is not None and exc.field.startswith("parameters.")
            return
        # the spec round-trips through the parser every submission goes through
        again = parse_job_spec(json.dumps(rendered.spec.model_dump(mode="json")))
        assert again == rendered.spec
        assert again.name == template.spec["name"]

    check()


def test_a_whole_placeholder_keeps_its_type_and_a_part_becomes_text() -> None:
    template = parse_template(
        """
name: t
description: d
parameters:
  gpus: {type: int, default: 2, min: 1, max: 4}
  tag: {type: text, default: a}
spec: {name: t, resources: {gpus: "{{ gpus }}"}, run: "echo {{tag}}-{{ gpus }}"}
"""
    )
    spec = render(template, {"gpus": "3"}, project="P-1", datasets=("d@2",)).spec
    assert spec.resources.gpus == 3 and spec.run == "echo a-3"
    assert spec.project == "P-1" and spec.datasets == ("d@2",)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: t\ndescription: d\nspec: {name: t, run: '{{ nope }}'}\n", "spec"),
        ("name: t\ndescription: d\nparameters: {Bad: {}}\nspec: {}\n", "parameters"),
        ("name: t\ndescription: d\nparameters: {n: {type: int, default: x}}\nspec: {}\n", "n"),
        ("name: t\ndescription: d\nextra: 1\nspec: {}\n", "extra"),
    ],
)
def test_a_broken_template_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert field in str(caught.value)


def test_a_value_that_breaks_a_rule_across_fields_names_its_parameter() -> None:
    with pytest.raises(TemplateError) as caught:
        render(SHIPPED["llm-pretrain"], {"time_limit": "20s", "grace": "30s"})
    assert caught.value.field in ("parameters.grace", "parameters.time_limit")


def test_llm_pretrain_asks_for_its_nodes_and_tells_the_script() -> None:
    template = SHIPPED["llm-pretrain"]
    one = render(template, {})
    assert (one.spec.resources.nodes, one.spec.env["NODES"]) == (1, "1")  # as before
    two = render(template, {"nodes": "2", "gpus": "3"})
    assert (two.spec.resources.nodes, two.spec.env["NODES"]) == (2, "2")
    assert (two.spec.resources.gpus, two.spec.resources.total_gpus) == (3, 6)  # per node
    for bad in ("0", "-1", "1.5", "two", "65", ""):
        with pytest.raises(TemplateError) as caught:
            render(template, {"nodes": bad})
        assert caught.value.field == "parameters.nodes" and "nodes" in str(caught.value), bad


def test_an_operators_folder_adds_and_replaces_templates(tmp_path: Path) -> None:
    mine = tmp_path / "digits-classifier"
    mine.mkdir()
    (mine / "template.yaml").write_text(
        "name: digits-classifier\ndescription: mine\nspec: {name: x, run: python go.py}\n"
    )
    (mine / "go.py").write_text("print('hi')\n")
    found = Templates(tmp_path)
    assert found.named("digits-classifier").template.description == "mine"
    assert "llm-pretrain" in {f.template.name for f in found.listed()}
    assert len(workdir_archive(found.named("digits-classifier"))) > 0


def _names(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_the_llm_templates_carry_the_shared_scripts_once_in_the_package() -> None:
    found = Templates()
    for name in ("llm-pretrain", "llm-finetune-lora"):
        files = _names(workdir_archive(found.named(name)))
        assert {"llm.sh", "training.py", "chartok.py"} <= set(files), name
        assert "template.yaml" not in files
    assert (
        _names(workdir_archive(found.named("llm-pretrain")))["training.py"]
        == (_names(workdir_archive(found.named("llm-finetune-lora")))["training.py"])
    )


def test_a_shared_folder_joins_the_workdir_and_the_templates_own_file_wins(
    tmp_path: Path,
) -> None:
    (tmp_path / "_shared" / "common").mkdir(parents=True)
    (tmp_path / "_shared" / "common" / "util.sh").write_text("shared util\n")
    (tmp_path / "_shared" / "common" / "go.py").write_text("shared go\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "template.yaml").write_text(
        "name: mine\ndescription: mine\nshared: [common, llm]\nspec: {name: x, run: python go.py}\n"
    )
    (mine / "go.py").write_text("own go\n")
    files = _names(workdir_archive(Templates(tmp_path).named("mine")))
    assert files["util.sh"] == b"shared util\n"
    assert files["go.py"] == b"own go\n"  # the template's own wins
    assert "llm.sh" in files  # a name missing here comes from the shipped _shared


def test_a_shared_name_without_its_folder_is_refused_naming_shared(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "template.yaml").write_text(
        "name: mine\ndescription: mine\nshared: [nowhere]\nspec: {name: x, run: 'true'}\n"
    )
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).listed()
    assert caught.value.field == "shared" and "_shared/nowhere" in caught.value.message


def test_the_digits_template_checkpoints_and_resumes(tmp_path: Path) -> None:
    """Its train.py saves its model and epoch, and a second run starts from them: the
    epoch counter goes on (the run of a job queued again after its time limit)."""
    import shutil
    import subprocess
    import sys

    shutil.copy(SHIPPED_DIR / "digits-classifier" / "train.py", tmp_path)
    env = {**os.environ, "FABBRICA_CHECKPOINT_DIR": str(tmp_path / "ck"),
           "FABBRICA_CHECKPOINT_EVERY": "0"}  # fmt: skip

    def train(epochs: int) -> str:
        done = subprocess.run(
            [sys.executable, "train.py"], cwd=tmp_path, env={**env, "EPOCHS": str(epochs)},
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return done.stdout

    first = train(40)
    assert "resuming" not in first and "epoch 40" in first and "checkpoint: epoch 40" in first
    second = train(60)
    assert "resuming from epoch 40" in second
    assert "epoch 20\n" not in second and "epoch 60" in second
    accuracy = float(second.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.9
