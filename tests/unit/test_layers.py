"""The layer rules hold: import-linter checks the contracts of pyproject.toml
([tool.importlinter]) in the test command. And they can fail: the same contracts, run on a
copy of the package with one upward import added, report that import as broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# The rules of docs/architecture.md; removing one from pyproject.toml fails this test.
REQUIRED = {
    "core-pure",
    "sched-pure",
    "sim-on-sched",
    "catalog-on-core",
    "store-below-services",
    "backends-on-core",
    "agent-on-core",
    "services-below-edges",
    "api-not-cli",
    "cli-not-api",
}


def lint(project: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` in `project`, on the package under `project`/src."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=project,
        env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_layer_rule_is_written_down_and_kept() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {c["id"] for c in config["contracts"]} >= REQUIRED
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken" in done.stdout
    assert "BROKEN" not in done.stdout


def test_docs_architecture_names_every_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = [c["id"] for c in config["contracts"] if f"`{c['id']}`" not in text]
    assert missing == []


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package and its contracts, copied where an import can be added."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(
        REPO / "src" / "fabbrica",
        root / "src" / "fabbrica",
        ignore=shutil.ignore_patterns("__pycache__", "data"),
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("module", "upward", "rule"),
    [
        ("core/jobs.py", "fabbrica.services.jobs", "core imports nothing"),
        ("sched/placement.py", "fabbrica.catalog.model", "sched imports nothing"),
        ("backends/local.py", "fabbrica.agent.loop", "backends never import"),
        ("backends/slurm/accounts.py", "fabbrica.services.agents", "backends never import"),
        ("services/jobs.py", "fabbrica.api.deps", "services never import"),
        ("store/db.py", "fabbrica.services.identity", "store never imports"),
        ("cli/output.py", "fabbrica.api.schemas", "cli never imports api"),
        ("api/errors.py", "fabbrica.cli.errors", "api never imports cli"),
    ],
)
def test_an_upward_import_breaks_its_rule(copy: Path, module: str, upward: str, rule: str) -> None:
    path = copy / "src" / "fabbrica" / module
    original = path.read_text()
    path.write_text(f"{original}\nimport {upward}  # noqa\n")
    try:
        done = lint(copy)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if line.endswith(" BROKEN")]
    assert any(line.startswith(rule) for line in broken), done.stdout  # (and rules above it)
    assert upward in done.stdout  # the report names the import


def test_the_copy_alone_keeps_every_rule(copy: Path) -> None:
    """The failures above come from the added import, not from the copy."""
    done = lint(copy)
    assert done.returncode == 0, done.stdout + done.stderr
