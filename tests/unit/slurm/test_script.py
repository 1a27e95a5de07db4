"""Batch scripts: the directives sbatch reads, and what bash really runs, for hostile input."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabbrica.backends.slurm.script import (
    MAX_ARG_BYTES,
    BatchJob,
    BatchJobError,
    ansi_c_quote,
    job_name,
    parse_sbatch_output,
    render,
    sbatch_argv,
    scancel_argv,
    slurm_time,
)

# Prints the command text bash received and $V, then stops before reading any more of it.
PROBE = 'printf \'%s\\0%s\' "$BASH_EXECUTION_STRING" "$V"; exit 0\n'
SPACE = " \t\n\v\f\r"
SQ = r"\$'(?:[^'\\]|\\.)*'"  # one bash $'...' word
HOSTILE = [
    "it's",
    "say \"hi\" 'there'",
    "$(touch MARKER)",
    "`touch MARKER`",
    "${IFS}$(touch MARKER)${PATH}",
    "'; touch MARKER; echo '",
    '"; touch MARKER; echo "',
    "\n#SBATCH --account=evil",
    "x\n#SBATCH --account=evil\n#PBS -A evil\n#SLURM --partition=evil",
    "\r\n#SBATCH --account=evil\r\n",
    "tab\there\tvertical\vform\ffeed",
    "unicode é ü ✓ 中文 🙂 \u2028 \u0085 \ufeff",
    "backslash \\ \\n \\x41 \\' \\\\",
    "$'\\x41' $\"x\" !! !$",
    "#SBATCH --account=evil",
    "*  ?  [a-z]  ~root  {a,b}",
    "%j %x %%",
    "\x01\x02\x1b[31mred\x7f",
    "trailing newlines\n\n\n",
    "a" * 5000,
]


def make_job(workdir: str = "/scratch/fab/42", **overrides: Any) -> BatchJob:
    fields: dict[str, Any] = dict(
        job_id=42,
        name="train",
        account="proj_1",
        partition="boost_usr_prod",
        gpu_model="h100",
        gpus=4,
        time_limit_seconds=3600,
        command="printf '%s' \"$V\"",
        env={},
        workdir=workdir,
        stdout_path=f"{workdir}/stdout",
        stderr_path=f"{workdir}/stderr",
    )
    return BatchJob(**(fields | overrides))


def expected(
    workdir: str = "/scratch/fab/42", name: str = "fab-42-train", nodes: int = 1
) -> list[str]:
    return [
        f"--job-name={name}",
        "--comment=fab-42",
        "--account=proj_1",
        "--partition=boost_usr_prod",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--gres=gpu:h100:4",
        "--time=0-01:00:00",
        f"--chdir={workdir}",
        f"--output={workdir}/stdout",
        f"--error={workdir}/stderr",
        "--open-mode=append",
    ]


def sbatch_directives(script: str) -> list[str]:
    """What sbatch takes from a script (src/sbatch/opt.c, _opt_batch_script): the arguments
    on `#SBATCH` / `#SLURM` lines before the first line that is not blank or a comment."""
    found: list[str] = []
    for line in script.split("\n"):
        for magic in ("#SBATCH", "#SLURM"):
            if line.startswith(magic):
                found += _arguments(line[len(magic) :])
                break
        else:
            if line.lstrip(SPACE)[:1] not in ("", "#"):
                break
    return found


def _arguments(text: str) -> list[str]:
    """sbatch's _get_argument: whitespace-separated, quotes group, `\\` escapes, `#` ends."""
    found: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i] in SPACE:
            i += 1
        arg, quote, escaped = "", "", False
        while i < len(text) and (quote or text[i] not in SPACE):
            char, i = text[i], i + 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote and char == quote:
                quote = ""
                continue
            elif not quote and char in "\"'":
                quote = char
                continue
            elif not quote and char == "#":
                return [*found, arg] if arg else found
            arg += char
        assert not quote, "sbatch: unmatched quote"
        if not arg:
            return found
        found.append(arg)


def check_lines(script: str, job: BatchJob, directives: list[str]) -> None:
    """One line per directive and statement, user text only inside single $'...' words."""
    assert script.isascii() and script.endswith("\n")
    assert "\r" not in script and "\x00" not in script
    lines = script.removesuffix("\n").split("\n")
    k = len(directives)
    assert lines[0] == "#!/bin/bash"
    assert lines[1 : k + 1] == [f"#SBATCH {d}" for d in directives]
    assert lines[k + 1].startswith("# Fabbrica job fab-")
    warned = job.signal_grace_seconds is not None and job.nodes == 1
    if warned:  # the batch shell passes SIGUSR1 on, from its first statement
        assert lines[k + 3].startswith("trap '") and lines[k + 3].endswith("' USR1")
        del lines[k + 3]
    assert lines[k + 2 : k + 4] == ["set -euo pipefail", f"cd {job.workdir}"]
    rest = lines[k + 4 :]
    if warned:
        assert rest[-4] == "set -m"
        assert re.fullmatch(r"/bin/bash -c \$'trap : USR1\\x0a(?:[^'\\]|\\.)*' &", rest[-3])
        assert rest[-2] == "FABBRICA_CHILD=$!" and rest[-1].startswith("while :; do wait ")
        rest[-4:] = ["exec /bin/bash -c $'(the command)'"]
    if job.nodes > 1:
        assert all(line.startswith("FABBRICA_") for line in rest[:4])
        rest = rest[4:]
    user = [key for key in job.env if not key.startswith("FABBRICA_")]
    assert len(rest) == len(user) + 2
    for key, line in zip(user, rest, strict=False):
        match = re.fullmatch(rf"export ([A-Za-z_][A-Za-z0-9_]*)={SQ}", line)
        assert match and match.group(1) == key
    assert re.fullmatch(r'export( [A-Z_]+=("\$[A-Z_]+"|[A-Za-z0-9_./+,@=:-]+))+', rest[-2])
    srun = '"\\$FABBRICA_SRUN" --export=ALL --kill-on-bad-exit=1 --nodes=\\d+ --ntasks-per-node=1'
    last = rf"exec {srun} /bin/bash -c '[^']*' fabbrica-node {SQ}" if job.nodes > 1 else ""
    assert re.fullmatch(last or rf"exec /bin/bash -c {SQ}", rest[-1])


def run_bash(script: str, where: Path, env: dict[str, str] | None = None) -> Any:
    """Run the script as Slurm would start it, outside Slurm (no SLURM_* variables)."""
    path = where / "job.sh"
    path.write_text(script)
    base = {"PATH": os.environ["PATH"], "HOME": str(where)}
    return subprocess.run(
        ["/bin/bash", str(path)], cwd="/", env=base | (env or {}), capture_output=True, timeout=60
    )


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({}, {}),
        ({"gpu_model": None}, {6: "--gres=gpu:4"}),
        ({"gpus": 8, "gpu_model": "a100_80g"}, {6: "--gres=gpu:a100_80g:8"}),
        ({"nodes": 16}, {4: "--nodes=16"}),
        ({"time_limit_seconds": 1}, {7: "--time=0-00:01:00"}),
        ({"time_limit_seconds": 90061}, {7: "--time=1-01:02:00"}),
        ({"name": "my job: v2/é"}, {0: "--job-name=fab-42-my_job__v2__"}),
        ({"name": ""}, {0: "--job-name=fab-42"}),
        ({"cpus_per_gpu": 8}, {12: "--cpus-per-gpu=8"}),
        ({"mem_per_gpu_mb": 65536}, {12: "--mem-per-gpu=65536M"}),
        ({"signal_grace_seconds": 90}, {12: "--signal=B:USR1@90"}),
    ],
)
def test_directives(overrides: dict[str, Any], changed: dict[int, str]) -> None:
    job = make_job(**overrides)
    want = expected(nodes=job.nodes)
    for index, directive in changed.items():
        if index < len(want):
            want[index] = directive
        else:
            want.append(directive)
    script = render(job)
    assert sbatch_directives(script) == want
    check_lines(script, job, want)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        *[(1, "0-00:01:00"), (59, "0-00:01:00"), (60, "0-00:01:00"), (61, "0-00:02:00")],
        *[(3600, "0-01:00:00"), (86_399, "1-00:00:00"), (86_400, "1-00:00:00")],
        (14 * 86_400, "14-00:00:00"),
    ],
)
def test_time_rounds_up_to_whole_minutes(seconds: int, text: str) -> None:
    assert slurm_time(seconds) == text


def test_job_name_is_at_most_64_characters_and_keeps_the_tag() -> None:
    assert job_name(42, "x" * 100) == "fab-42-" + "x" * 57
    assert job_name(7, "ok.Name-1_2") == "fab-7-ok.Name-1_2"


BIG = "x" * 1024 * 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *[("account", "gpu --account=x"), ("account", "a#b"), ("partition", "gpu --account=x")],
        *[("partition", "gpu\n"), ("partition", ""), ("gpu_model", "h100:2"), ("gpu_model", "")],
        *[("workdir", "relative/dir"), ("workdir", "/has space"), ("workdir", "/a'b")],
        *[("stdout_path", "/x/%j.out"), ("stderr_path", "/x\n#SBATCH --account=evil")],
        *[("data_dir", "data"), ("data_dir", "/d;rm -rf /")],
        *[("gpus", 0), ("gpus", True), ("nodes", "2"), ("time_limit_seconds", 0), ("run", 0)],
        *[("cpus_per_gpu", 0), ("mem_per_gpu_mb", -1), ("job_id", -1), ("name", None)],
        ("signal_grace_seconds", 0),
        *[("command", ""), ("command", "a\x00b"), ("command", "\ud800"), ("command", BIG)],
        ("command", "x" * (MAX_ARG_BYTES + 1)),
        *[
            ("env", {"A;B": "x"}),
            ("env", {"PATH=x": "x"}),
            ("env", {"1A": "x"}),
            ("env", {"": "x"}),
        ],
        *[("env", {"SHELLOPTS": "xtrace"}), ("env", {"RANDOM": "4"}), ("env", {"A": "a\x00"})],
        *[("env", {"A": 3}), ("env", {"A": BIG})],
    ],
)
def test_invalid_values_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(BatchJobError) as caught:
        make_job(**{field: value})
    field = f"env[{next(iter(value))!r}]" if field == "env" else field
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("where", ["name", "env", "command"])
def test_hostile_text_is_never_interpreted(text: str, where: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    text = text.replace("MARKER", str(marker))
    values = {"name": text, "env": {"V": text}, "command": PROBE + text}
    job = make_job(str(tmp_path), **{where: values[where]})
    script = render(job)
    name = f"fab-42-{re.sub(r'[^A-Za-z0-9._-]', '_', text)}"[:64] if where == "name" else None
    want = expected(str(tmp_path), name or "fab-42-train")
    assert sbatch_directives(script) == want
    check_lines(script, job, want)
    done = run_bash(script, tmp_path)
    assert done.returncode == 0, done.stderr
    if where == "env":
        assert done.stdout == text.encode()
    if where == "command":
        assert done.stdout == (PROBE + text).encode() + b"\0"
    assert not marker.exists()


def test_the_longest_command_linux_accepts_arrives_whole(tmp_path: Path) -> None:
    command = PROBE + "é" * ((MAX_ARG_BYTES - len(PROBE)) // 2)
    done = run_bash(render(make_job(str(tmp_path), command=command)), tmp_path)
    assert done.stdout == command.encode() + b"\0"


def test_the_command_runs_as_written_without_the_wrappers_shell_options(tmp_path: Path) -> None:
    command = 'false; printf \'%s|%s\' "$-" "${RANK-none}"; [[ -o pipefail ]] || exit 7'
    done = run_bash(render(make_job(str(tmp_path), command=command)), tmp_path)
    assert done.returncode == 7  # no errexit, no pipefail: the user's shell, not ours
    flags, rank = done.stdout.split(b"|")
    assert b"e" not in flags and b"u" not in flags and rank == b"none"


def test_fabbrica_variables_on_one_node_win_over_the_jobs_own(tmp_path: Path) -> None:
    command = 'printf "%s|" "$PWD" $FABBRICA_JOB_ID $FABBRICA_NUM_NODES $FABBRICA_NODE_RANK'
    command += ' $FABBRICA_NUM_GPUS "$FABBRICA_JOB_DIR" "$PATH" $FABBRICA_RUN'
    env = {"FABBRICA_JOB_ID": "evil", "FABBRICA_SRUN": "evil", "PATH": "/nowhere"}
    env |= {"FABBRICA_RUN": "evil"}
    done = run_bash(render(make_job(str(tmp_path), command=command, env=env, run=3)), tmp_path)
    assert done.stdout.decode() == f"{tmp_path}|fab-42|1|0|4|{tmp_path}|/nowhere|3|"


def test_the_staged_data_sets_are_at_fabbrica_data_and_only_fabbrica_says_where(
    tmp_path: Path,
) -> None:
    command = 'printf "%s|" "${FABBRICA_DATA-unset}"'
    env = {"FABBRICA_DATA": "/evil"}
    plain = run_bash(render(make_job(str(tmp_path), command=command, env=env)), tmp_path)
    assert plain.stdout.decode() == "unset|"
    staged = make_job(str(tmp_path), command=command, env=env, data_dir="/srv/data/fab-42")
    assert run_bash(render(staged), tmp_path).stdout.decode() == "/srv/data/fab-42|"


def test_a_checkpointing_job_gets_its_folder_whatever_its_name(tmp_path: Path) -> None:
    folder = str(tmp_path / "ck $(touch pwned) 'q' é")
    command = 'printf "%s|%s" "$FABBRICA_CHECKPOINT_DIR" "$FABBRICA_CHECKPOINT_EVERY"'
    job = make_job(
        str(tmp_path),
        command=command,
        signal_grace_seconds=30,
        checkpoint_dir=folder,
        checkpoint_every_seconds=300,
    )
    script = render(job)
    assert "#SBATCH --signal=B:USR1@30" in script
    done = run_bash(script, tmp_path)
    assert done.stdout.decode() == f"{folder}|300"
    assert not (tmp_path / "pwned").exists()


FAKE_SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE/srun-args"
while [[ $1 == --* ]]; do shift; done
code=0
for ((node = 0; node < 3; node++)); do
  SLURM_NODEID=$node "$@" > "$FAKE/node$node"; status=$?
  (( status > code )) && code=$status
done
exit $code
"""
FAKE_SCONTROL = """#!/bin/bash
[[ $1 == show && $2 == hostnames && $3 == "node-[a-c]" ]] || exit 9
printf 'node-a\\nnode-b\\nnode-c\\n'
"""


@pytest.mark.parametrize("text", HOSTILE[:12], ids=range(12))
def test_multi_node_runs_the_command_once_per_node_with_its_rank(text: str, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    for name, body in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (tmp_path / "bin" / name).write_text(body)
        (tmp_path / "bin" / name).chmod(0o755)
    names = "RANK NODE_RANK LOCAL_RANK WORLD_SIZE MASTER_ADDR MASTER_PORT FABBRICA_NODE_RANK"
    names += " FABBRICA_NUM_NODES FABBRICA_JOB_ID"
    command = f'printf "%s|" {" ".join(f"${n}" for n in names.split())} "$V"; exit $RANK'
    env = {"V": text.replace("MARKER", str(tmp_path / "marker")), "MASTER_ADDR": "evil"}
    env |= {"FABBRICA_SRUN": "/bin/false", "FABBRICA_HOSTS": "evil"}  # ignored: Fabbrica's
    job = make_job(str(tmp_path), nodes=3, command=command, env=env | {"PATH": "/nowhere"})
    script = render(job)
    assert sbatch_directives(script) == expected(str(tmp_path), nodes=3)
    check_lines(script, job, expected(str(tmp_path), nodes=3))
    slurm = {"FAKE": str(tmp_path), "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "node-[a-c]"}
    path = f"{tmp_path}/bin:{os.environ['PATH']}"
    done = run_bash(script, tmp_path, slurm | {"PATH": path})
    assert done.returncode == 2, done.stderr  # the highest exit code of the nodes
    for node in range(3):
        out = (tmp_path / f"node{node}").read_bytes()
        want = f"{node}|{node}|0|3|node-a|18456|{node}|3|fab-42|{env['V']}|"
        assert out == want.encode()
    args = (tmp_path / "srun-args").read_bytes().split(b"\0")
    options = b"--export=ALL --kill-on-bad-exit=1 --nodes=3 --ntasks-per-node=1".split()
    assert args[:5] == [*options, b"/bin/bash"]
    assert args[-2] == command.encode()
    assert not (tmp_path / "marker").exists()


def test_multi_node_outside_an_allocation_stops_before_the_command(tmp_path: Path) -> None:
    done = run_bash(render(make_job(str(tmp_path), nodes=2, command="touch x")), tmp_path)
    assert done.returncode != 0
    assert not (tmp_path / "x").exists()


NO_NUL = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@settings(max_examples=150, deadline=None)
@given(name=NO_NUL, command=NO_NUL, value=NO_NUL)
def test_any_text_round_trips_and_never_adds_a_directive(
    name: str, command: str, value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    where = tmp_path_factory.getbasetemp()
    job = make_job(str(where), name=name, command=PROBE + command, env={"V": value})
    script = render(job)
    want = expected(str(where), f"fab-42-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"[:64])
    want[0] = want[0] if name else "--job-name=fab-42"
    assert sbatch_directives(script) == want
    check_lines(script, job, want)
    done = run_bash(script, where)
    assert done.stdout == (PROBE + command).encode() + b"\0" + value.encode()


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        *[("plain text", "$'plain text'"), ("a'b\\c", "$'a\\'b\\\\c'"), ("\n", "$'\\x0a'")],
        *[("é", "$'\\xc3\\xa9'"), ("\\x41", "$'\\\\x41'")],
    ],
)
def test_ansi_c_quote(text: str, quoted: str) -> None:
    assert ansi_c_quote(text) == quoted


def test_the_environment_is_copied_and_read_only() -> None:
    env = {"A": "1"}
    job = make_job(env=env)
    env["A"] = "\x00"
    assert dict(job.env) == {"A": "1"}
    with pytest.raises(TypeError):
        job.env["A"] = "2"  # type: ignore[index]


def test_command_lines() -> None:
    assert sbatch_argv("/w/job.sh") == ["sbatch", "--parsable", "/w/job.sh"]
    assert scancel_argv("12345") == ["scancel", "12345"]
    for bad in ("", "-1", "12 34", "12;rm", "1\n"):
        with pytest.raises(BatchJobError):
            scancel_argv(bad)
    for bad in ("", "--wrap=id", "a\x00b"):
        with pytest.raises(BatchJobError):
            sbatch_argv(bad)


@pytest.mark.parametrize(("text", "slurm_id"), [("12345\n", "12345"), ("678;cluster-a\n", "678")])
def test_parse_sbatch_output(text: str, slurm_id: str) -> None:
    assert parse_sbatch_output(text) == slurm_id


@pytest.mark.parametrize(
    "text", ["", "\n", "Submitted batch job 12", "12;", "12;a;b", "abc", "12\n34", "-1", "1 2"]
)
def test_parse_sbatch_output_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        parse_sbatch_output(text)
