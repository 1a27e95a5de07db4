"""The one way Fabbrica runs Slurm commands: a list argv (never a shell), a timeout, the
cluster's `SLURM_CONF`, and errors that say which command failed and how.

Commands get a small environment, not the agent's own: PATH, HOME, user, time zone and
`SLURM_CONF`. Two reasons: sbatch copies its environment into the job (the agent's token
must not reach users' jobs), and `SBATCH_*` / `SQUEUE_*` variables would silently change
what the commands do and print.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TZ", "SLURM_CONF")
DEFAULT_TIMEOUT_S = 30.0
_STDERR_IN_MESSAGE = 2000


def display(argv: Sequence[str]) -> str:
    """The command as one shell-quoted line, for logs and error messages."""
    return shlex.join(argv)


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class SlurmError(Exception):
    """A Slurm command could not be run or did not succeed."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        super().__init__(f"{display(argv)}: {message}")
        self.argv = tuple(argv)


class CommandNotFound(SlurmError):
    """The program is not installed (or not on PATH, or not executable)."""


class SlurmTimeout(SlurmError):
    """The command outlived its timeout and was killed. For sbatch and scancel the action
    may still have happened: find out by the job's tag, never by retrying blindly."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(argv, f"no answer within {timeout:g} s")
        self.timeout = timeout


class SlurmCommandError(SlurmError):
    """The command ran and exited non-zero."""

    def __init__(self, completed: Completed) -> None:
        stderr = completed.stderr.strip()[:_STDERR_IN_MESSAGE] or "(nothing on stderr)"
        super().__init__(completed.argv, f"exit code {completed.returncode}: {stderr}")
        self.returncode = completed.returncode
        self.stderr = completed.stderr
        self.completed = completed


class SlurmRunner:
    """Runs Slurm's commands for one cluster (the one `slurm_conf` describes)."""

    def __init__(
        self,
        slurm_conf: str | os.PathLike[str] | None = None,
        *,
        inherit: Iterable[str] = INHERITED_ENV,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        source = os.environ if environ is None else environ
        self.base_env = {name: source[name] for name in inherit if name in source}
        if slurm_conf is not None:
            self.base_env["SLURM_CONF"] = os.fspath(slurm_conf)

    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self.base_env, **(overrides or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        input: str | None = None,
        env_overrides: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Completed:
        """Run `argv`; SlurmCommandError if it exits non-zero (unless `check=False`)."""
        argv = tuple(argv)
        if not argv or timeout <= 0:
            raise ValueError("run needs a command and a positive timeout")
        log.debug("running %s", display(argv))
        try:
            proc = subprocess.Popen(  # noqa: S603 - a list argv, no shell
                argv,
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env(env_overrides),
                encoding="utf-8",
                errors="replace",
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise CommandNotFound(argv, f"cannot run {argv[0]!r}: {exc.strerror}") from exc
        with proc:
            try:
                stdout, stderr = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                raise SlurmTimeout(argv, timeout) from None
        completed = Completed(argv, proc.returncode, stdout, stderr)
        if check and completed.returncode != 0:
            raise SlurmCommandError(completed)
        return completed


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
