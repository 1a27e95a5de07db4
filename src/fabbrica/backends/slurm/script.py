"""Batch scripts and command lines for Slurm, built by pure functions.

`render(job)` writes the whole batch script of one Fabbrica job. What the user wrote never
starts a line: the job name is reduced to `[A-Za-z0-9._-]` inside `--job-name`, and the
command and the environment values appear only inside bash ANSI-C quotes (`$'...'`) where
every quote, backslash and byte outside printable ASCII is written as an escape. The script
is pure ASCII with one line per directive or statement, so sbatch reads exactly the
directives written here and bash runs exactly the statements written here.

Every value that goes into a directive is checked against a strict pattern when the
`BatchJob` is made; a bad one raises `BatchJobError` (a `ValueError`) naming the field.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fabbrica.core.jobs import run_tag as run_tag  # re-exported: the tag on every job

MAX_ARG_BYTES = 128 * 1024 - 1  # Linux's MAX_ARG_STRLEN less the NUL: one argv/env string
MAX_JOB_NAME = 64
MASTER_PORT_BASE = 15_000  # MASTER_PORT = base + Slurm job id % base: below ephemeral ports
RESERVED_ENV_PREFIX = "FABBRICA_"  # set by Fabbrica; a job's own values for these are ignored

# Names bash keeps for itself: read-only (an export would stop the script) or recomputed
# (the value would not reach the command as written).
BASH_OWN_NAMES = frozenset(
    {
        *("BASHOPTS", "BASHPID", "BASH_ARGC", "BASH_ARGV", "BASH_ARGV0", "BASH_COMMAND"),
        *("BASH_EXECUTION_STRING", "BASH_LINENO", "BASH_SOURCE", "BASH_SUBSHELL"),
        *("BASH_VERSINFO", "BASH_VERSION", "DIRSTACK", "EPOCHREALTIME", "EPOCHSECONDS"),
        *("EUID", "FUNCNAME", "GROUPS", "HISTCMD", "LINENO", "PIPESTATUS", "PPID", "RANDOM"),
        *("SECONDS", "SHELLOPTS", "SRANDOM", "UID"),
    }
)

_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")  # account, partition, GPU model
_PATH = re.compile(r"/[A-Za-z0-9_.+,@=:/-]*")  # no space, quote, `#`, `%` (Slurm patterns)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SBATCH_OUT = re.compile(r"([0-9]+)(?:;[A-Za-z0-9_.-]+)?")
_SLURM_ID = re.compile(r"[0-9]+")

# Each srun task reads its own rank (SLURM_NODEID is per task), then runs the command.
_PER_NODE = (
    'export FABBRICA_NODE_RANK="${SLURM_NODEID:?}"; '
    'export NODE_RANK="$FABBRICA_NODE_RANK" RANK="$FABBRICA_NODE_RANK" LOCAL_RANK=0; '
    'exec /bin/bash -c "$1"'
)

# A job warned before its time limit, on one node: the batch shell passes SIGUSR1 on to the
# command's process group and waits until the command ended (a wait cut short by the
# signal is waited again), then exits with its code.
_FORWARD_USR1 = (
    'trap \'[ -n "${FABBRICA_CHILD-}" ] && kill -USR1 -- "-$FABBRICA_CHILD" 2>/dev/null || :\' USR1'
)
_WAIT_CHILD = (
    'while :; do wait "$FABBRICA_CHILD" && FABBRICA_CODE=0 || FABBRICA_CODE=$?; '
    'kill -0 "$FABBRICA_CHILD" 2>/dev/null || exit "$FABBRICA_CODE"; done'
)

# One escape (or the character itself) for each byte of the UTF-8 text.
_ESCAPES = {b: f"\\x{b:02x}" for b in range(256)}
_ESCAPES.update({b: chr(b) for b in range(0x20, 0x7F)})
_ESCAPES.update({ord("'"): "\\'", ord("\\"): "\\\\"})


class BatchJobError(ValueError):
    """A batch job that cannot be written safely; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchJob:
    """One Fabbrica job as Slurm runs it. `gpus` counts the GPUs on each node."""

    job_id: int
    name: str
    account: str
    partition: str
    gpu_model: str | None
    gpus: int
    nodes: int = 1
    time_limit_seconds: int
    command: str
    env: Mapping[str, str]
    workdir: str
    data_dir: str | None = None  # the data sets staged for it, at $FABBRICA_DATA/<name>
    stdout_path: str
    stderr_path: str
    cpus_per_gpu: int | None = None
    mem_per_gpu_mb: int | None = None
    # a job that checkpoints: SIGUSR1 to the batch shell this long before its time limit,
    # and where it saves (a path of the run's work folder)
    signal_grace_seconds: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every_seconds: int | None = None
    run: int = 1  # the job's run ($FABBRICA_RUN): 2 and on once it was lost or resumed

    def __post_init__(self) -> None:
        _check(self)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


def ansi_c_quote(text: str, field: str = "text") -> str:
    """`text` as one bash word `$'...'` that bash reads back byte for byte.

    Printable ASCII stays as is, `'` and `\\` are escaped, every other byte (newlines,
    carriage returns, tabs, control and non-ASCII bytes) becomes `\\xHH`; NUL is refused.
    """
    return "$'" + "".join(_ESCAPES[b] for b in _utf8(text, field)) + "'"


def job_name(job_id: int, name: str) -> str:
    """`fab-<id>-<name>` with every character outside `[A-Za-z0-9._-]` made `_`, at most
    64 characters (the run tag always whole)."""
    safe = _NAME_UNSAFE.sub("_", name)
    return (f"{run_tag(job_id)}-{safe}" if safe else run_tag(job_id))[:MAX_JOB_NAME]


def slurm_time(seconds: int) -> str:
    """`D-HH:MM:SS`, rounded up to whole minutes as Slurm itself would (so the limit written
    is the limit Slurm keeps and reports)."""
    days, minutes = divmod(math.ceil(seconds / 60), 24 * 60)
    return f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"


def render(job: BatchJob) -> str:
    """The batch script: directives, then a body that ends by exec'ing the command.

    One node: `exec /bin/bash -c <command>`. Several: `exec srun ... /bin/bash -c ...`, one
    task per node, each exporting its rank from its own SLURM_NODEID. Either way the job's
    exit code is the command's (several nodes: srun's, the highest of the nodes', and
    `--kill-on-bad-exit` ends the others when one fails). The wrapper's `set -euo pipefail`
    stops only Fabbrica's own steps; the command runs in a fresh bash, as written.

    A job warned before its time limit (`signal_grace_seconds`): Slurm sends SIGUSR1 to the
    batch shell alone (`B:`), and a bash that does not trap it dies of it, and its child
    (the job's program) never hears of it. So, as on the local backend, the job's shells
    ignore it (`trap : USR1` before the command; the job may set its own) and every process
    of the job gets it: on one node the batch shell runs the command in a process group of
    its own (`set -m`), forwards SIGUSR1 to that group and waits for it (its exit code is
    the command's); on several, srun forwards it to each node's task.
    """
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in _directives(job))]
    lines.append(f"# Fabbrica job {run_tag(job.job_id)}: user text is only inside $'...'")
    lines += _body(job)
    return "\n".join(lines) + "\n"


def sbatch_argv(script_path: str) -> list[str]:
    """Submit a script; `--parsable` prints `<id>` or `<id>;<cluster>`."""
    if not script_path or "\x00" in script_path or script_path.startswith("-"):
        raise BatchJobError("script_path", f"{script_path!r} is not a usable path")
    return ["sbatch", "--parsable", script_path]


def scancel_argv(slurm_id: str) -> list[str]:
    if not _SLURM_ID.fullmatch(slurm_id):
        raise BatchJobError("slurm_id", f"{slurm_id!r} is not a Slurm job id")
    return ["scancel", slurm_id]


def parse_sbatch_output(text: str) -> str:
    """The Slurm job id from `sbatch --parsable` output (`12345` or `12345;cluster`)."""
    match = _SBATCH_OUT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"sbatch printed {text[:200]!r}, not a job id")
    return match.group(1)


# --- the script's parts -------------------------------------------------------------------


def _directives(job: BatchJob) -> list[str]:
    gres = f"gpu:{job.gpu_model}:{job.gpus}" if job.gpu_model else f"gpu:{job.gpus}"
    directives = [
        f"--job-name={job_name(job.job_id, job.name)}",
        f"--comment={run_tag(job.job_id)}",
        f"--account={job.account}",
        f"--partition={job.partition}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",
        f"--gres={gres}",
        f"--time={slurm_time(job.time_limit_seconds)}",
        f"--chdir={job.workdir}",
        f"--output={job.stdout_path}",
        f"--error={job.stderr_path}",
        "--open-mode=append",  # a later run of the job here goes on after the earlier's log
    ]
    if job.cpus_per_gpu is not None:
        directives.append(f"--cpus-per-gpu={job.cpus_per_gpu}")
    if job.mem_per_gpu_mb is not None:
        directives.append(f"--mem-per-gpu={job.mem_per_gpu_mb}M")
    if job.signal_grace_seconds is not None:
        directives.append(f"--signal=B:USR1@{job.signal_grace_seconds}")
    return directives


def _body(job: BatchJob) -> list[str]:
    """Fabbrica's own steps first (before the job's environment can change PATH), then
    the job's environment, Fabbrica's variables, and the command as the last process."""
    multi = job.nodes > 1
    lines = ["set -euo pipefail"]
    if job.signal_grace_seconds is not None and not multi:
        lines.append(_FORWARD_USR1)  # from the start: the batch shell never dies of it
    lines.append(f"cd {shlex.quote(job.workdir)}")
    if multi:
        lines += [
            'FABBRICA_HOSTS="$(scontrol show hostnames "${SLURM_JOB_NODELIST:?}")"',
            "FABBRICA_MASTER_ADDR=${FABBRICA_HOSTS%%$'\\n'*}",
            f'FABBRICA_MASTER_PORT="$(({MASTER_PORT_BASE} + ${{SLURM_JOB_ID:?}}'
            f' % {MASTER_PORT_BASE}))"',
            'FABBRICA_SRUN="$(command -v srun)"',
        ]
    lines += [
        f"export {key}={ansi_c_quote(value)}"
        for key, value in job.env.items()
        if not key.startswith(RESERVED_ENV_PREFIX)
    ]
    fabbrica = {
        "FABBRICA_JOB_ID": run_tag(job.job_id),
        "FABBRICA_JOB_DIR": shlex.quote(job.workdir),
        "FABBRICA_NUM_NODES": str(job.nodes),
        "FABBRICA_NUM_GPUS": str(job.gpus),
        "FABBRICA_RUN": str(job.run),
    }
    if job.data_dir is not None:
        fabbrica["FABBRICA_DATA"] = shlex.quote(job.data_dir)
    if job.checkpoint_dir is not None:
        fabbrica["FABBRICA_CHECKPOINT_DIR"] = ansi_c_quote(job.checkpoint_dir)
        fabbrica["FABBRICA_CHECKPOINT_EVERY"] = str(job.checkpoint_every_seconds or 600)
    if multi:
        fabbrica |= {
            "MASTER_ADDR": '"$FABBRICA_MASTER_ADDR"',
            "MASTER_PORT": '"$FABBRICA_MASTER_PORT"',
            "WORLD_SIZE": str(job.nodes),
        }
    else:
        fabbrica["FABBRICA_NODE_RANK"] = "0"
    lines.append("export " + " ".join(f"{k}={v}" for k, v in fabbrica.items()))
    warned = job.signal_grace_seconds is not None
    command = ansi_c_quote(f"trap : USR1\n{job.command}" if warned else job.command, "command")
    if multi:
        srun = f"--export=ALL --kill-on-bad-exit=1 --nodes={job.nodes} --ntasks-per-node=1"
        per_node = f"/bin/bash -c {shlex.quote(_PER_NODE)} fabbrica-node"
        lines.append(f'exec "$FABBRICA_SRUN" {srun} {per_node} {command}')
    elif warned:
        lines += [
            "set -m",  # the command in a process group of its own, which SIGUSR1 goes to
            f"/bin/bash -c {command} &",
            "FABBRICA_CHILD=$!",
            _WAIT_CHILD,
        ]
    else:
        lines.append(f"exec /bin/bash -c {command}")
    return lines


# --- checks -------------------------------------------------------------------------------


def _check(job: BatchJob) -> None:
    _int(job.job_id, "job_id", low=0)
    if not isinstance(job.name, str):
        raise BatchJobError("name", "must be text")
    for field in ("account", "partition"):
        _token(getattr(job, field), field)
    if job.gpu_model is not None:
        _token(job.gpu_model, "gpu_model")
    for field in ("gpus", "nodes", "time_limit_seconds", "run"):
        _int(getattr(job, field), field, low=1)
    for field in ("cpus_per_gpu", "mem_per_gpu_mb", "signal_grace_seconds"):
        if getattr(job, field) is not None:
            _int(getattr(job, field), field, low=1)
    paths = ("workdir", "stdout_path", "stderr_path", "data_dir")
    for field in paths if job.data_dir is not None else paths[:-1]:
        value = getattr(job, field)
        if not isinstance(value, str) or not _PATH.fullmatch(value) or len(value) > 4096:
            raise BatchJobError(field, f"{value!r} is not an absolute path of [A-Za-z0-9_.+,@=:/-]")
    if not isinstance(job.command, str) or not job.command:
        raise BatchJobError("command", "must be non-empty text")
    if len(_utf8(job.command, "command")) > MAX_ARG_BYTES:
        raise BatchJobError("command", f"longer than {MAX_ARG_BYTES:,} bytes (Linux's limit)")
    if not isinstance(job.env, Mapping):
        raise BatchJobError("env", "must be a mapping of names to text")
    for key, value in job.env.items():
        _env_entry(key, value)


def _env_entry(key: object, value: object) -> None:
    field = f"env[{key!r}]"
    if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
        raise BatchJobError(field, "a variable name is [A-Za-z_][A-Za-z0-9_]*")
    if key in BASH_OWN_NAMES:
        raise BatchJobError(field, "bash keeps this name for itself")
    if not isinstance(value, str):
        raise BatchJobError(field, "the value must be text")
    if len(key) + 1 + len(_utf8(value, field)) > MAX_ARG_BYTES:
        raise BatchJobError(field, f"NAME=value is longer than {MAX_ARG_BYTES:,} bytes")


def _utf8(text: str, field: str) -> bytes:
    if "\x00" in text:
        raise BatchJobError(field, "contains a NUL character")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BatchJobError(field, "is not valid Unicode text") from exc


def _token(value: object, field: str) -> None:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise BatchJobError(field, f"{value!r} is not [A-Za-z0-9_.-]+")


def _int(value: object, field: str, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BatchJobError(field, f"{value!r} is not a whole number >= {low}")
