"""What Slurm says about jobs and limits, read by pure functions: the command lines for
`squeue`, `sacct` and `sacctmgr`, and parsers of their output into frozen dataclasses.

The commands print delimited text, not JSON. Debian's Slurm 22.05 does have `--json` for
`squeue` and `sacct` (openapi/v0.0.38), but its layout changes with every Slurm release
(times become `{"set": ..., "number": ...}` objects in 23.02, the plugin is replaced by
data_parser in 23.11), while the columns asked for here have read the same since 20.11.

- Fields are separated by ASCII unit separator (0x1f), which no name or comment contains,
  so a `|` in a job name cannot shift the columns (`sacct --delimiter`, `squeue --Format`
  field suffixes).
- Slurm prints times in the local time zone of the command, with no offset: run the
  commands with `STATUS_ENV` (TZ=UTC) and parse with the default `tz` (UTC).
- `sacct` stores a job's comment only at the end of the job (and only with
  `AccountingStoreFlags=job_comment`): while a job runs, sacct shows an empty comment but
  squeue shows it. `SlurmJob.run_tag` falls back to the job name (`fab-<id>-...`).
- sacct lags behind the controller: a running job can read `PENDING` there (with a start
  time), and the first `COMPLETED` record of a short job can lack the partition for a few
  seconds. Take live states from squeue, final records from sacct.
- One line per job; a field with a newline in it (a comment set by hand) is not read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from fabbrica.core.jobs import RUN_TAG_PATTERN

SEP = "\x1f"
STATUS_ENV: Mapping[str, str] = {"TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}

# Each command's columns, in the order it prints them, and the name each one is read as:
# the parsers see one row shape, whichever command printed it.
SQUEUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("JobID", "site_job_id"),
    ("Name", "name"),
    ("Comment", "comment"),
    ("Account", "account"),
    ("UserName", "user"),
    ("Partition", "partition"),
    ("State", "state"),
    ("Reason", "reason"),
    ("StartTime", "start"),
    ("EndTime", "end"),
    ("TimeUsed", "elapsed"),
    ("tres-alloc", "tres"),
    ("tres-per-node", "tres_requested"),
)
SACCT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("JobID", "site_job_id"),
    ("JobName", "name"),
    ("Comment", "comment"),
    ("Account", "account"),
    ("User", "user"),
    ("Partition", "partition"),
    ("State", "state"),
    ("Reason", "reason"),
    ("ExitCode", "exit_code"),
    ("Start", "start"),
    ("End", "end"),
    ("ElapsedRaw", "elapsed"),
    ("AllocTRES", "tres"),
    ("ReqTRES", "tres_requested"),
)
SQUEUE_FIELDS: tuple[str, ...] = tuple(column for column, _ in SQUEUE_COLUMNS)
SACCT_FIELDS: tuple[str, ...] = tuple(column for column, _ in SACCT_COLUMNS)
ASSOC_FIELDS: tuple[str, ...] = ("Cluster", "Account", "User", "GrpTRESMins")

# squeue's answer when the one job asked for is no longer known (exit code 1)
SQUEUE_INVALID_JOB = "Invalid job id specified"

_JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+|_\[[0-9,\-%]+\]|\+[0-9]+)?")
_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")
_RUN_TAG = re.compile(rf"({RUN_TAG_PATTERN})(?:-|$)")  # in a comment, or a name fab-<id>-...
_DURATION = re.compile(r"(?:(?P<d>[0-9]+)-)?(?:(?P<h>[0-9]+):)?(?P<m>[0-9]+):(?P<s>[0-9]+)")
_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}
_NO_VALUE = frozenset({"", "None", "none", "(null)", "N/A", "n/a", "Unknown", "INVALID"})


class SlurmState(StrEnum):
    """A Slurm job state, normalised: `raw_state` on the job keeps what Slurm printed."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    OUT_OF_MEMORY = "out_of_memory"
    PREEMPTED = "preempted"
    BOOT_FAIL = "boot_fail"
    DEADLINE = "deadline"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self not in _NOT_FINISHED


_NOT_FINISHED = frozenset(
    {SlurmState.PENDING, SlurmState.RUNNING, SlurmState.SUSPENDED, SlurmState.UNKNOWN}
)

_STATES: Mapping[str, SlurmState] = {
    "PENDING": SlurmState.PENDING,
    "REQUEUED": SlurmState.PENDING,
    "REQUEUE_HOLD": SlurmState.PENDING,
    "REQUEUE_FED": SlurmState.PENDING,
    "RESV_DEL_HOLD": SlurmState.PENDING,
    "RUNNING": SlurmState.RUNNING,
    "CONFIGURING": SlurmState.RUNNING,
    "COMPLETING": SlurmState.RUNNING,  # the job is over, its final state not yet known
    "STAGE_OUT": SlurmState.RUNNING,
    "SIGNALING": SlurmState.RUNNING,
    "RESIZING": SlurmState.RUNNING,
    "SUSPENDED": SlurmState.SUSPENDED,
    "STOPPED": SlurmState.SUSPENDED,
    "COMPLETED": SlurmState.COMPLETED,
    "FAILED": SlurmState.FAILED,
    "SPECIAL_EXIT": SlurmState.FAILED,
    "CANCELLED": SlurmState.CANCELLED,
    "REVOKED": SlurmState.CANCELLED,
    "TIMEOUT": SlurmState.TIMEOUT,
    "NODE_FAIL": SlurmState.NODE_FAIL,
    "OUT_OF_MEMORY": SlurmState.OUT_OF_MEMORY,
    "PREEMPTED": SlurmState.PREEMPTED,
    "BOOT_FAIL": SlurmState.BOOT_FAIL,
    "DEADLINE": SlurmState.DEADLINE,
}


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One Slurm job (its allocation, not its steps), from squeue or sacct.

    `gpus` counts the GPUs allocated, or for a job not started yet the GPUs requested;
    `gpu_model` is known when the cluster accounts typed GPUs (`gres/gpu:<model>` in
    AccountingStorageTRES) or the job asked for a model. `exit_code` and `signal` come
    from sacct's `ExitCode` (`code:signal`) and are None from squeue. A job cancelled
    before it started may have `start` equal to `end` (and `elapsed_seconds` 0).
    `site_job_id` is Slurm's id of the job (`123`, `123_4` for an array task).
    """

    site_job_id: str
    name: str
    comment: str
    account: str
    user: str
    partition: str
    state: SlurmState
    raw_state: str
    reason: str | None
    exit_code: int | None
    signal: int | None
    start: dt.datetime | None
    end: dt.datetime | None
    elapsed_seconds: int
    gpus: int
    gpu_model: str | None

    @property
    def run_tag(self) -> str | None:
        """The `fab-<id>` tag Fabbrica put in the comment (or, failing that, the name)."""
        for text in (self.comment, self.name):
            match = _RUN_TAG.match(text)
            if match:
                return match.group(1)
        return None


@dataclass(frozen=True, slots=True)
class Association:
    """One row of `sacctmgr show associations`: an account's (user is None) or a user's.

    `grp_tres_mins` holds the GrpTRESMins limits as (TRES, minutes) pairs, e.g.
    `(("gres/gpu", 600),)`; memory values are in MB-minutes.
    """

    cluster: str
    account: str
    user: str | None
    grp_tres_mins: tuple[tuple[str, int], ...] = ()

    def limit(self, tres: str) -> int | None:
        return dict(self.grp_tres_mins).get(tres)

    @property
    def gpu_minutes(self) -> int | None:
        """The GPU-minutes limit (GrpTRESMins=gres/gpu=N), None when unlimited."""
        return self.limit("gres/gpu")


# --- command lines ------------------------------------------------------------------------


def squeue_argv(site_job_ids: Iterable[str] = (), *, name: str | None = None) -> list[str]:
    """Jobs the controller knows, finished ones included (for MinJobAge after their end).

    With exactly one job id that the controller has forgotten, squeue exits 1 with
    `SQUEUE_INVALID_JOB` on stderr: read that as no jobs (`is_invalid_job_error`).
    """
    fmt = ",".join(f"{field}:0{SEP}" for field in SQUEUE_FIELDS)
    argv = ["squeue", "--noheader", "--states=all", f"--Format={fmt}", *_jobs(site_job_ids)]
    if name is not None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"job name {name!r} is not [A-Za-z0-9_.@+-]+")
        argv.append(f"--name={name}")
    return argv


def sacct_argv(site_job_ids: Iterable[str] = (), *, since: dt.datetime | None = None) -> list[str]:
    """Accounting records, one line per job allocation (no steps).

    Without `since`, sacct starts at midnight today, unless job ids are given (then at
    the epoch); `since` is written in UTC, so run the command with `STATUS_ENV`.
    """
    argv = [
        "sacct",
        "--allocations",
        "--noheader",
        "--parsable2",
        f"--delimiter={SEP}",
        "--format=" + ",".join(SACCT_FIELDS),
    ]
    if since is not None:
        argv.append("--starttime=" + _utc(since).strftime("%Y-%m-%dT%H:%M:%S"))
    return argv + _jobs(site_job_ids)


def assoc_argv(cluster: str | None = None, account: str | None = None) -> list[str]:
    """`sacctmgr show associations`: every cluster's, or only `cluster`'s / `account`'s."""
    argv = ["sacctmgr", "--noheader", "--parsable2", "show", "associations"]
    for key, value in (("cluster", cluster), ("account", account)):
        if value is not None:
            if not _NAME.fullmatch(value):
                raise ValueError(f"{key} {value!r} is not [A-Za-z0-9_.@+-]+")
            argv.append(f"{key}={value}")
    return [*argv, "format=" + ",".join(ASSOC_FIELDS)]


def is_invalid_job_error(stderr: str) -> bool:
    return SQUEUE_INVALID_JOB in stderr


def _jobs(site_job_ids: Iterable[str]) -> list[str]:
    ids = list(site_job_ids)
    for site_job_id in ids:
        if not _JOB_ID.fullmatch(site_job_id):
            raise ValueError(f"{site_job_id!r} is not a Slurm job id")
    return ["--jobs=" + ",".join(ids)] if ids else []


# --- parsers ------------------------------------------------------------------------------


def parse_squeue(text: str, *, tz: dt.tzinfo = dt.UTC) -> list[SlurmJob]:
    """Jobs from `squeue_argv()` output. Times are read in `tz` and returned in UTC."""
    return [
        _slurm_job(row, tz=tz, accounted=False)
        for row in _rows(text, SQUEUE_COLUMNS, trailing_sep=True)
    ]


def parse_sacct(text: str, *, tz: dt.tzinfo = dt.UTC) -> list[SlurmJob]:
    """Jobs from `sacct_argv()` output; step lines (`123.batch`), if any, are skipped."""
    return [
        _slurm_job(row, tz=tz, accounted=True)
        for row in _rows(text, SACCT_COLUMNS, trailing_sep=False)
        if "." not in row["site_job_id"]
    ]


def _slurm_job(row: Mapping[str, str], *, tz: dt.tzinfo, accounted: bool) -> SlurmJob:
    """One job from a row of squeue (`accounted` False) or sacct (True) output.

    What differs: sacct alone has the exit code, counts elapsed time in seconds rather
    than `[days-]h:m:s`, gives a start time to a pending job (a planned one), and lacks
    allocated TRES before the start (then the requested TRES count); squeue names the GPU
    model in the per-node request when the allocation does not."""
    state, raw = parse_state(row["state"])
    if accounted:
        allocated = _optional(row["tres"]) is not None
        gpus, model = gpus_from_tres(row["tres"] if allocated else row["tres_requested"])
        exit_code, signal = parse_exit_code(row["exit_code"])
        elapsed = _int(row["elapsed"])
        start_known = True
    else:
        gpus, model = gpus_from_tres(row["tres"])
        model = model or gpu_model_from_gres(row["tres_requested"])
        exit_code, signal = None, None
        elapsed = parse_duration(row["elapsed"])
        start_known = state is not SlurmState.PENDING
    return SlurmJob(
        site_job_id=row["site_job_id"],
        name=_text(row["name"]),
        comment=_text(row["comment"]),
        account=_text(row["account"]),
        user=_text(row["user"]),
        partition=_text(row["partition"]),
        state=state,
        raw_state=raw,
        reason=_optional(row["reason"]),
        exit_code=exit_code if state.finished else None,
        signal=signal if state.finished else None,
        start=parse_time(row["start"], tz=tz) if start_known else None,
        end=parse_time(row["end"], tz=tz) if state.finished else None,
        elapsed_seconds=elapsed,
        gpus=gpus,
        gpu_model=model,
    )


def parse_assoc(text: str) -> list[Association]:
    """Rows of `assoc_argv()` output (`sacctmgr -n -P`, fields separated by `|`)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != len(ASSOC_FIELDS):
            raise ValueError(f"expected {len(ASSOC_FIELDS)} fields in {line!r}")
        cluster, account, user, limits = fields
        rows.append(
            Association(
                cluster=cluster,
                account=account,
                user=user or None,
                grp_tres_mins=tuple(
                    (name, number)
                    for name, value in parse_tres(limits).items()
                    if (number := _tres_number(name, value)) is not None
                ),
            )
        )
    return rows


def parse_state(text: str) -> tuple[SlurmState, str]:
    """(`SlurmState`, raw) from `CANCELLED by 0`, `COMPLETED`, `PD`...; UNKNOWN if unheard of."""
    raw = text.strip()
    word = raw.split(" ", 1)[0].rstrip("+").upper()
    return _STATES.get(word, SlurmState.UNKNOWN), raw


def parse_tres(text: str) -> dict[str, str]:
    """`billing=1,cpu=1,gres/gpu:a100=1,gres/gpu=1` -> {"cpu": "1", "gres/gpu": "1", ...}."""
    tres = {}
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        if name and eq:
            tres[name] = value
    return tres


def gpus_from_tres(text: str) -> tuple[int, str | None]:
    """(GPUs, model) from a TRES list: `gres/gpu=N` counts, `gres/gpu:<model>=N` names the
    model (the one with the most GPUs if several); without `gres/gpu=N` the typed counts
    are added up."""
    total: int | None = None
    typed: dict[str, int] = {}
    for name, value in parse_tres(text).items():
        count = _int(value)
        if name == "gres/gpu":
            total = count
        elif name.startswith("gres/gpu:") and count > 0:
            typed[name.removeprefix("gres/gpu:")] = count
    model = max(typed, key=lambda m: (typed[m], m)) if typed else None
    return (total if total is not None else sum(typed.values())), model


def gpu_model_from_gres(text: str) -> str | None:
    """The model in a GRES request: `gres:gpu:a100:1`, `gres/gpu:a100=1`, `gpu:a100:2`."""
    for item in text.split(","):
        parts = re.split(r"[:=]", item.strip().removeprefix("gres:").removeprefix("gres/"))
        if len(parts) == 3 and parts[0] == "gpu" and not parts[1].isdigit():
            return parts[1]
    return None


def parse_time(text: str, *, tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """An ISO time as Slurm prints it, read in `tz` unless it has an offset; in UTC."""
    value = text.strip()
    if value in _NO_VALUE:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.astimezone(dt.UTC)


def parse_duration(text: str) -> int:
    """Seconds in `[days-][hours:]minutes:seconds` (squeue's TimeUsed); 0 if unreadable."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return 0
    days, hours, minutes, seconds = (int(match.group(g) or 0) for g in "dhms")
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct's `code:signal` -> (code, signal); (None, None) if unreadable."""
    code, colon, signal = text.strip().partition(":")
    if not (code.isdigit() and colon and signal.isdigit()):
        return None, None
    return int(code), int(signal)


def _rows(
    text: str, columns: tuple[tuple[str, str], ...], *, trailing_sep: bool
) -> list[dict[str, str]]:
    """Each line as {name: value}, named after `columns`."""
    names = [name for _, name in columns]
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split(SEP)
        if trailing_sep and values and values[-1] == "":
            values.pop()
        if len(values) != len(names):
            raise ValueError(f"expected {len(names)} fields, got {len(values)}: {line!r}")
        rows.append(dict(zip(names, values, strict=True)))
    return rows


def _text(value: str) -> str:
    return "" if value.strip() == "(null)" else value


def _optional(value: str) -> str | None:
    return None if value.strip() in _NO_VALUE else value.strip()


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return 0


def _tres_number(name: str, value: str) -> int | None:
    value = value.strip()
    if value.isdigit():
        return int(value)
    unit = value[-1:].upper()
    if name == "mem" and unit in _MEMORY_UNITS and value[:-1].replace(".", "", 1).isdigit():
        return round(float(value[:-1]) * _MEMORY_UNITS[unit])
    return None


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    return when.astimezone(dt.UTC)
