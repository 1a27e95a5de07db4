"""The runner, with real small commands."""

from __future__ import annotations

import os
import time

import pytest

from fabbrica.backends.slurm.runner import (
    CommandNotFound,
    SlurmCommandError,
    SlurmRunner,
    SlurmTimeout,
    display,
)

ENVIRON = {
    "PATH": os.environ["PATH"],
    "HOME": "/home/agent",
    "FABBRICA_TOKEN": "secret",
    "SBATCH_ACCOUNT": "someone-else",
    "SQUEUE_FORMAT": "%i",
}


def runner(slurm_conf: str | None = "/etc/slurm-a/slurm.conf") -> SlurmRunner:
    return SlurmRunner(slurm_conf, environ=ENVIRON)


def test_success_returns_what_the_command_printed() -> None:
    done = runner().run(["sh", "-c", "printf out; printf err >&2"])
    assert (done.argv, done.returncode, done.stdout, done.stderr) == (
        ("sh", "-c", "printf out; printf err >&2"),
        0,
        "out",
        "err",
    )
    assert runner().run(["true"]).returncode == 0


def test_failure_names_the_command_its_exit_code_and_stderr() -> None:
    with pytest.raises(SlurmCommandError) as caught:
        runner().run(["sh", "-c", "echo 'sbatch: error: Invalid account' >&2; exit 3", "a b"])
    error = caught.value
    assert (error.returncode, error.stderr) == (3, "sbatch: error: Invalid account\n")
    assert error.argv[0] == "sh"
    assert str(error).startswith("sh -c ")
    assert "'a b'" in str(error) and "exit code 3: sbatch: error: Invalid account" in str(error)
    with pytest.raises(SlurmCommandError, match="exit code 1: \\(nothing on stderr\\)"):
        runner().run(["false"])


def test_check_false_returns_the_failure() -> None:
    assert runner().run(["false"], check=False).returncode == 1


def test_input_goes_to_stdin_and_stdin_is_empty_otherwise() -> None:
    assert runner().run(["cat"], input="#!/bin/bash\necho é\n").stdout == "#!/bin/bash\necho é\n"
    assert runner().run(["cat"]).stdout == ""


def test_undecodable_output_does_not_raise() -> None:
    assert runner().run(["printf", "\\377ok"]).stdout == "\ufffdok"


def test_timeout_kills_the_command_and_its_children() -> None:
    started = time.monotonic()
    with pytest.raises(SlurmTimeout) as caught:
        runner().run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.2)
    assert time.monotonic() - started < 10  # not 30: the background sleep was killed too
    assert caught.value.timeout == 0.2
    assert "no answer within 0.2 s" in str(caught.value)
    with pytest.raises(SlurmTimeout):
        runner().run(["sleep", "5"], timeout=0.2)


def test_a_missing_program_is_named() -> None:
    with pytest.raises(CommandNotFound, match="fabbrica-no-such-sbatch"):
        runner().run(["fabbrica-no-such-sbatch", "--parsable"])
    with pytest.raises(CommandNotFound):
        runner().run(["/nonexistent/dir/sbatch"])


def test_slurm_conf_and_a_small_environment_reach_the_command() -> None:
    env = runner().run(["env"]).stdout.splitlines()
    assert sorted(env) == sorted(
        [f"PATH={os.environ['PATH']}", "HOME=/home/agent", "SLURM_CONF=/etc/slurm-a/slurm.conf"]
    )
    overridden = runner().run(["env"], env_overrides={"SLURM_CONF": "/b.conf", "X": "1"})
    assert {"SLURM_CONF=/b.conf", "X=1"} <= set(overridden.stdout.splitlines())


def test_slurm_conf_comes_from_the_environment_when_not_given() -> None:
    assert "SLURM_CONF" not in runner(None).env()
    inherited = SlurmRunner(environ=ENVIRON | {"SLURM_CONF": "/etc/c.conf"}).env()
    assert inherited["SLURM_CONF"] == "/etc/c.conf"


def test_the_arguments_are_never_read_by_a_shell(tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "marker")
    done = runner().run(["printf", "%s", f"$(touch {marker}); `touch {marker}`"])
    assert done.stdout == f"$(touch {marker}); `touch {marker}`"
    assert not os.path.exists(marker)


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError):
        runner().run([])
    with pytest.raises(ValueError):
        runner().run(["true"], timeout=0)


def test_display_quotes_for_a_shell() -> None:
    assert display(["sbatch", "--parsable", "/a b/it's"]) == "sbatch --parsable '/a b/it'\"'\"'s'"
