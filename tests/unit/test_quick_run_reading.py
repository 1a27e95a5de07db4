"""What the quick `fabbrica run` reads without Typer nor a YAML parser: the command line and
the spec's `workdir` (fabbrica.cli.quick_run). Whatever it reads must be what the full path
reads; whatever it cannot tell, it leaves to the full path (None)."""

from __future__ import annotations

import pytest

from fabbrica.cli.quick_run import DEFAULT_WORKDIR, options, spec_workdir
from fabbrica.core.jobspec import JobSpec, SpecError, parse_job_spec

BASE = "name: x\nrun: python train.py\n"
# (spec text, what the quick path reads: a folder, or None to leave it to the full path)
SPECS = [
    (BASE, "."),
    (BASE + "workdir: src\n", "src"),
    (BASE + "workdir: ./src/model  # the code\n", "./src/model"),
    ("workdir: ..\n" + BASE, ".."),
    (BASE + "workdir: ../x\n", "../x"),
    (BASE + "workdir: _build\n", "_build"),
    (BASE + "workdir:   data-2\nresources: {gpus: 1}\n", "data-2"),
    (BASE + "workdir: 'src'\n", None),  # quoted
    (BASE + 'workdir: "src"\n', None),
    (BASE + "workdir: src\n  more\n", None),  # a plain scalar that goes on
    (BASE + "workdir: yes\n", None),  # a boolean, not a folder
    (BASE + "workdir: null\n", None),
    (BASE + "workdir: ~\n", None),
    (BASE + "workdir: 2024\n", None),
    (BASE + "workdir: .5\n", None),  # a float
    (BASE + "workdir: 0x1F\n", None),
    (BASE + "workdir: *dir\n", None),  # an alias
    (BASE + "workdir: !!str src\n", None),  # a tag
    (BASE + "workdir:\n", None),
    (BASE + "workdir: src\nworkdir: other\n", None),
    ("base: &b\n  workdir: src\n" + BASE, None),  # not at the top level
    ("  name: x\n  run: y\n  workdir: src\n", None),  # an indented mapping
    ('{"name": "x", "run": "y", "workdir": "src"}', None),  # JSON
    ('{"name": "x", "run": "y"}', "."),
    ("{name: x, run: y,\nworkdir: src}\n", None),  # flow style
    ('"work\\x64ir": src\n' + BASE, None),  # an escape that spells it
    ('{"name": "x", "run": "y", "\\u0077orkdir": "src"}', None),
    (BASE.replace("python train.py", "cd workdir && make") + "workdir: src\n", None),
    (BASE + "run2: |\n  cd workdir\n", None),  # the word elsewhere: not sure
    (BASE + "workdir: src # note\n", "src"),
    (BASE + "workdir : src\n", "src"),
    (BASE + "workdir:src\n", None),  # not a key: one plain scalar
    (BASE + "workdir: src#not-a-comment\n", None),
    (BASE + "workdir: src\n\n# the end\n", "src"),
    (BASE + "workdir: src\r\nresources: {gpus: 1}\r\n", "src"),
]


@pytest.mark.parametrize(("text", "expected"), SPECS)
def test_the_workdir_read_is_the_parsers_or_none(text: str, expected: str | None) -> None:
    found = spec_workdir(text)
    assert found == expected
    if found is None:
        return
    try:
        parsed = parse_job_spec(text)
    except SpecError:  # the server refuses it; the quick path then says what the full one does
        return
    assert parsed.workdir == found


def test_the_default_is_the_specs() -> None:
    assert JobSpec.model_fields["workdir"].default == DEFAULT_WORKDIR


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["job.yaml"], ("job.yaml", None, None, False)),
        (["job.yaml", "--json"], ("job.yaml", None, None, True)),
        (["--project", "p1", "job.yaml"], ("job.yaml", "p1", None, False)),
        (["job.yaml", "--project=p1", "--workdir", "d", "--json"], ("job.yaml", "p1", "d", True)),
        (["--workdir=src", "job.yaml"], ("job.yaml", None, "src", False)),
    ],
)
def test_the_lines_it_takes(args: list[str], expected: tuple[object, ...]) -> None:
    assert options(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--json"],
        ["job.yaml", "other.yaml"],
        ["job.yaml", "--wait"],
        ["job.yaml", "--follow"],
        ["--template", "t"],
        ["job.yaml", "--set", "a=1"],
        ["job.yaml", "--help"],
        ["job.yaml", "-h"],
        ["job.yaml", "--project"],
        ["job.yaml", "--project", "--json"],
        ["job.yaml", "--project="],
        ["job.yaml", "--project", "a", "--project", "b"],
        ["job.yaml", "--json", "--json"],
        ["job.yaml", "--"],
        ["-"],
        [""],
        ["job.yaml", "--proj", "a"],
    ],
)
def test_every_other_line_goes_to_the_full_path(args: list[str]) -> None:
    assert options(args) is None
