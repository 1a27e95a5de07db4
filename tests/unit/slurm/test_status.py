"""Parsers of squeue, sacct and sacctmgr output, on samples captured from the testbed
(see data/README.md) and on edge cases."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fabbrica.backends.slurm.status import (
    SACCT_FIELDS,
    SEP,
    SQUEUE_FIELDS,
    STATUS_ENV,
    Association,
    SlurmJob,
    SlurmState,
    assoc_argv,
    gpu_model_from_gres,
    gpus_from_tres,
    is_invalid_job_error,
    parse_assoc,
    parse_duration,
    parse_exit_code,
    parse_sacct,
    parse_squeue,
    parse_state,
    parse_time,
    parse_tres,
    sacct_argv,
    squeue_argv,
)

DATA = Path(__file__).parent / "data"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def by_id(jobs: list[SlurmJob]) -> dict[str, SlurmJob]:
    ids = [job.site_job_id for job in jobs]
    assert len(ids) == len(set(ids))
    return {job.site_job_id: job for job in jobs}


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --- command lines ------------------------------------------------------------------------


def test_squeue_argv_asks_for_every_field_with_the_separator() -> None:
    argv = squeue_argv()
    assert argv[:3] == ["squeue", "--noheader", "--states=all"]
    fmt = argv[3].removeprefix("--Format=")
    assert fmt.split(",") == [f"{field}:0{SEP}" for field in SQUEUE_FIELDS]
    assert squeue_argv(["12", "13_4"])[-1] == "--jobs=12,13_4"


def test_sacct_argv() -> None:
    argv = sacct_argv(["7"], since=dt.datetime(2026, 11, 22, 2, 30, tzinfo=ZoneInfo("CET")))
    assert argv == [
        "sacct",
        "--allocations",
        "--noheader",
        "--parsable2",
        f"--delimiter={SEP}",
        "--format=" + ",".join(SACCT_FIELDS),
        "--starttime=2026-11-22T01:30:00",
        "--jobs=7",
    ]
    assert "--jobs" not in " ".join(sacct_argv())
    with pytest.raises(ValueError, match="timezone-aware"):
        sacct_argv(since=dt.datetime(2026, 11, 22))


@pytest.mark.parametrize("bad", ["", "12;rm", "-1", "12,13", "--all", "1 2"])
def test_job_ids_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm job id"):
        squeue_argv([bad])
    with pytest.raises(ValueError, match="not a Slurm job id"):
        sacct_argv([bad])


def test_assoc_argv() -> None:
    assert assoc_argv() == [
        "sacctmgr",
        "--noheader",
        "--parsable2",
        "show",
        "associations",
        "format=Cluster,Account,User,GrpTRESMins",
    ]
    assert assoc_argv("jaif", "proj-1")[5:7] == ["cluster=jaif", "account=proj-1"]
    with pytest.raises(ValueError, match="account"):
        assoc_argv(account="a where user=root")


def test_status_env_pins_the_time_zone() -> None:
    assert STATUS_ENV["TZ"] == "UTC"


def test_invalid_job_error() -> None:
    assert is_invalid_job_error("slurm_load_jobs error: Invalid job id specified\n")
    assert not is_invalid_job_error("squeue: error: Unable to contact slurm controller")


# --- squeue -------------------------------------------------------------------------------


def test_squeue_live_sample() -> None:
    jobs = by_id(parse_squeue(sample("squeue_live.txt")))
    assert len(jobs) == 11
    done = jobs["3"]
    assert done == SlurmJob(
        site_job_id="3",
        name="fab-101-train",
        comment="fab-101",
        account="root",
        user="root",
        partition="gpu",
        state=SlurmState.COMPLETED,
        raw_state="COMPLETED",
        reason=None,
        exit_code=None,
        signal=None,
        start=utc("2026-11-22T01:43:19"),
        end=utc("2026-11-22T01:43:20"),
        elapsed_seconds=1,
        gpus=1,
        gpu_model="gh200",
    )
    assert done.run_tag == "fab-101"
    running = jobs["8"]
    assert (running.state, running.gpus, running.gpu_model) == (SlurmState.RUNNING, 2, "gh200")
    assert running.start == utc("2026-11-22T01:43:21")
    assert running.end is None  # squeue's EndTime of a running job is only its time limit
    assert running.elapsed_seconds == 5
    held = jobs["7"]
    assert (held.state, held.reason, held.account) == (
        SlurmState.PENDING,
        "AssocGrpGRESMinutes",
        "capacct",
    )
    assert (held.start, held.end, held.gpus) == (None, None, 1)  # requested, not allocated
    assert (jobs["9"].reason, jobs["9"].gpus) == ("Resources", 3)
    assert (jobs["10"].user, jobs["10"].account) == ("fabuser1", "testbed")
    assert (jobs["4"].state, jobs["4"].reason) == (SlurmState.FAILED, "NonZeroExitCode")
    assert jobs["5"].state is SlurmState.CANCELLED


def test_squeue_fields_that_slurm_leaves_empty() -> None:
    jobs = by_id(parse_squeue(sample("squeue_live.txt")))
    no_comment = jobs["2"]
    assert no_comment.comment == ""  # squeue prints (null)
    assert no_comment.run_tag is None
    assert no_comment.gpu_model == "gh200"  # from the allocated TRES, though it asked gpu:1
    untyped_pending = jobs["11"]
    assert untyped_pending.name == "odd|name x"  # a | in the name does not shift columns
    assert (untyped_pending.gpus, untyped_pending.gpu_model) == (1, None)
    assert jobs["1"].comment == "fab-0123456789abcdef0123456789abcdef"  # no truncation


def test_squeue_finished_sample() -> None:
    jobs = by_id(parse_squeue(sample("squeue_finished.txt")))
    timeout = jobs["6"]
    assert (timeout.state, timeout.reason, timeout.elapsed_seconds) == (
        SlurmState.TIMEOUT,
        "TimeLimit",
        69,
    )
    assert timeout.end == utc("2026-11-22T01:44:28")
    assert jobs["11"].gpu_model == "gh200"  # allocated a model once it ran
    assert jobs["7"].state is SlurmState.PENDING


# --- sacct --------------------------------------------------------------------------------


def test_sacct_finished_sample() -> None:
    jobs = by_id(parse_sacct(sample("sacct_finished.txt")))
    assert len(jobs) == 11
    assert jobs["3"] == SlurmJob(
        site_job_id="3",
        name="fab-101-train",
        comment="fab-101",
        account="root",
        user="root",
        partition="gpu",
        state=SlurmState.COMPLETED,
        raw_state="COMPLETED",
        reason=None,
        exit_code=0,
        signal=0,
        start=utc("2026-11-22T01:43:19"),
        end=utc("2026-11-22T01:43:20"),
        elapsed_seconds=1,
        gpus=1,
        gpu_model="gh200",
    )
    failed = jobs["4"]
    assert (failed.state, failed.exit_code, failed.signal) == (SlurmState.FAILED, 3, 0)
    cancelled = jobs["5"]
    assert (cancelled.state, cancelled.raw_state) == (SlurmState.CANCELLED, "CANCELLED by 0")
    assert (jobs["6"].state, jobs["6"].elapsed_seconds) == (SlurmState.TIMEOUT, 69)
    never_ran = jobs["7"]
    assert never_ran.state is SlurmState.CANCELLED
    assert (never_ran.start, never_ran.end) == (None, utc("2026-11-22T01:45:06"))
    assert (never_ran.reason, never_ran.gpus, never_ran.elapsed_seconds) == (
        "AssocGrpGRESMinutes",
        1,
        0,
    )
    assert (jobs["8"].gpus, jobs["8"].elapsed_seconds) == (2, 100)
    assert jobs["9"].gpus == 3
    assert (jobs["10"].user, jobs["10"].state) == ("fabuser1", SlurmState.CANCELLED)
    assert jobs["11"].name == "odd|name x"
    assert all(job.partition == "gpu" for job in jobs.values())


def test_sacct_live_sample_has_no_comment_for_unfinished_jobs() -> None:
    jobs = by_id(parse_sacct(sample("sacct_live.txt")))
    running = jobs["6"]
    assert (running.state, running.comment, running.end, running.exit_code) == (
        SlurmState.RUNNING,
        "",
        None,
        None,
    )
    assert running.run_tag == "fab-104"  # from the job name
    pending = jobs["9"]
    assert (pending.state, pending.start, pending.gpus, pending.reason) == (
        SlurmState.PENDING,
        None,
        3,  # from ReqTRES: nothing allocated yet
        None,  # sacct does not know why a job waits; squeue does
    )
    assert jobs["7"].reason == "AssocGrpGRESMinutes"


def test_sacct_skips_step_lines() -> None:
    line = SEP.join(
        [
            "42.batch",
            "batch",
            "",
            "a",
            "",
            "",
            "COMPLETED",
            "",
            "0:0",
            "2026-11-22T01:00:00",
            "2026-11-22T01:00:05",
            "5",
            "cpu=1,gres/gpu=1",
            "",
        ]
    )
    assert parse_sacct(line + "\n") == []


# --- sacctmgr -----------------------------------------------------------------------------


def test_assoc_sample() -> None:
    rows = parse_assoc(sample("assoc.txt"))
    assert len(rows) == 7
    assert Association("jaif", "capacct", None, (("gres/gpu", 1),)) in rows
    limited = next(row for row in rows if row.account == "capacct" and row.user is None)
    assert limited.gpu_minutes == 1
    assert limited.limit("cpu") is None
    user = next(row for row in rows if row.user == "fabuser1")
    assert (user.cluster, user.account, user.gpu_minutes) == ("jaif", "testbed", None)


def test_assoc_several_limits() -> None:
    (row,) = parse_assoc("it4lia|proj|alice|cpu=600,gres/gpu=120,mem=2G,gres/gpu:a100=60\n")
    assert row.user == "alice"
    assert row.grp_tres_mins == (
        ("cpu", 600),
        ("gres/gpu", 120),
        ("mem", 2048),
        ("gres/gpu:a100", 60),
    )
    assert row.gpu_minutes == 120


def test_assoc_bad_line() -> None:
    with pytest.raises(ValueError, match="expected 4 fields"):
        parse_assoc("jaif|root\n")


# --- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_empty_output(text: str) -> None:
    assert parse_squeue(text) == []
    assert parse_sacct(text) == []
    assert parse_assoc(text) == []


def test_a_line_with_missing_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match=f"expected {len(SQUEUE_FIELDS)} fields"):
        parse_squeue(SEP.join(["1", "name", "comment"]) + SEP + "\n")
    with pytest.raises(ValueError, match=f"expected {len(SACCT_FIELDS)} fields"):
        parse_sacct("1|name|COMPLETED\n")  # sacct's default delimiter, not ours


def test_empty_fields_and_unknown_state() -> None:
    fields = dict.fromkeys(SQUEUE_FIELDS, "")
    fields |= {"JobID": "77", "State": "SOME_NEW_STATE", "TimeUsed": "INVALID"}
    (job,) = parse_squeue(SEP.join(fields.values()) + SEP)
    assert (job.state, job.raw_state) == (SlurmState.UNKNOWN, "SOME_NEW_STATE")
    assert not job.state.finished
    assert (job.name, job.comment, job.reason, job.start, job.end) == ("", "", None, None, None)
    assert (job.elapsed_seconds, job.gpus, job.gpu_model, job.run_tag) == (0, 0, None, None)


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("PENDING", SlurmState.PENDING),
        ("REQUEUED", SlurmState.PENDING),
        ("CONFIGURING", SlurmState.RUNNING),
        ("COMPLETING", SlurmState.RUNNING),
        ("SUSPENDED", SlurmState.SUSPENDED),
        ("COMPLETED", SlurmState.COMPLETED),
        ("CANCELLED by 1001", SlurmState.CANCELLED),
        ("CANCELLED+", SlurmState.CANCELLED),
        ("TIMEOUT", SlurmState.TIMEOUT),
        ("NODE_FAIL", SlurmState.NODE_FAIL),
        ("OUT_OF_MEMORY", SlurmState.OUT_OF_MEMORY),
        ("PREEMPTED", SlurmState.PREEMPTED),
        ("BOOT_FAIL", SlurmState.BOOT_FAIL),
        ("DEADLINE", SlurmState.DEADLINE),
        ("failed", SlurmState.FAILED),
        ("", SlurmState.UNKNOWN),
        ("PD", SlurmState.UNKNOWN),
    ],
)
def test_states(text: str, state: SlurmState) -> None:
    assert parse_state(text) == (state, text)


def test_finished_states() -> None:
    unfinished = {SlurmState.PENDING, SlurmState.RUNNING, SlurmState.SUSPENDED, SlurmState.UNKNOWN}
    for state in SlurmState:
        assert state.finished is (state not in unfinished)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("billing=1,cpu=1,gres/gpu:gh200=2,gres/gpu=2,node=1", (2, "gh200")),
        ("cpu=1,mem=8G,node=1,billing=1,gres/gpu=1", (1, None)),
        ("gres/gpu:a100=2,gres/gpu:h100=1", (3, "a100")),
        ("gres/gpu=4,gres/gpu:a100=1,gres/gpu:h100=3", (4, "h100")),
        ("cpu=4,mem=1G,node=1", (0, None)),
        ("", (0, None)),
        ("gres/gpu=lots", (0, None)),
    ],
)
def test_gpus_from_tres(text: str, expected: tuple[int, str | None]) -> None:
    assert gpus_from_tres(text) == expected


def test_parse_tres_ignores_junk() -> None:
    assert parse_tres("cpu=1,,junk,=3,mem=8G") == {"cpu": "1", "mem": "8G"}


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("gres:gpu:a100:1", "a100"),
        ("gres/gpu:h100=2", "h100"),
        ("gpu:mi250x:4", "mi250x"),
        ("gres:gpu:1", None),
        ("N/A", None),
        ("", None),
        ("gres:shard:a100:1", None),
    ],
)
def test_gpu_model_from_gres(text: str, model: str | None) -> None:
    assert gpu_model_from_gres(text) == model


def test_times() -> None:
    assert parse_time("2026-11-22T01:43:19") == utc("2026-11-22T01:43:19")
    cet = ZoneInfo("Europe/Rome")
    assert parse_time("2026-11-22T02:43:19", tz=cet) == utc("2026-11-22T01:43:19")
    assert parse_time("2026-11-22T02:43:19+01:00") == utc("2026-11-22T01:43:19")
    for text in ("Unknown", "None", "N/A", "", "INVALID", "yesterday"):
        assert parse_time(text) is None
    (job,) = parse_squeue(sample("squeue_live.txt").splitlines()[1], tz=cet)
    assert job.start == utc("2026-11-22T00:43:19")
    assert job.start is not None and job.start.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0:00", 0),
        ("1:09", 69),
        ("1:02:03", 3723),
        ("2-00:00:01", 172801),
        ("INVALID", 0),
        ("", 0),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:0", (0, 0)), ("3:0", (3, 0)), ("0:15", (0, 15)), ("", (None, None)), ("x", (None, None))],
)
def test_exit_codes(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


def test_run_tag() -> None:
    jobs = by_id(parse_sacct(sample("sacct_finished.txt")))
    assert jobs["3"].run_tag == "fab-101"
    assert jobs["1"].run_tag is None  # fab-0123... is not fab-<digits>
    assert jobs["2"].run_tag is None
