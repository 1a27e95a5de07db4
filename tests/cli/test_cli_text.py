"""What the CLI prints and refuses without a server: text as text, whole ids, readable hours,
messages instead of tracebacks (issue 10 findings 6, 7, 8 on the CLI side)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from fabbrica.cli.client import cli_error
from fabbrica.cli.errors import FAILURE
from fabbrica.cli.output import gpu_hours, number, print_record
from fabbrica.client import Client, OutputsError
from fabbrica.client._archive import extract_outputs
from fabbrica.core.text import SLUG_PATTERN
from tests.cli.server import clean_env, fabbrica, free_port

MARKUP = "[bold red]x[/]"
PATTERN = SLUG_PATTERN  # the pattern of job names, which a refusal quotes


def offline_env(**extra: str) -> dict[str, str]:
    """A client environment whose API answers nothing: any request fails with exit 1."""
    return clean_env(FABBRICA_URL=f"http://127.0.0.1:{free_port()}", FABBRICA_TOKEN="t", **extra)


def python(code: str, **env: str) -> str:
    """Run `code` in a fresh interpreter (stdout a pipe, not a terminal) and return stdout."""
    environ = {k: v for k, v in clean_env(**env).items() if k != "COLUMNS" or "COLUMNS" in env}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_stored_names_print_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    print_record({"name": MARKUP, "message": PATTERN, "tags": [MARKUP, "[dim]y"]})
    out = capsys.readouterr().out
    assert f"name     {MARKUP}" in out
    assert f"message  {PATTERN}" in out
    assert f"{MARKUP}, [dim]y" in out


def test_tables_print_markup_and_long_ids_whole_into_a_pipe() -> None:
    long_id = "FAB-AIF-2026PG11-0001-" + "x" * 70
    code = (
        "from fabbrica.cli.output import print_table\n"
        f"rows = [{{'id': {long_id!r}, 'name': {MARKUP!r}, 'note': 'word ' * 40}}]\n"
        "print_table('t', [('id', lambda r: r['id']), ('name', lambda r: r['name']),"
        " ('note', lambda r: r['note'])], rows)\n"
    )
    piped = python(code)
    rows = [line for line in piped.splitlines() if long_id in line]
    assert len(rows) == 1 and MARKUP in rows[0]  # one line per row into a pipe
    narrow = python(code, COLUMNS="60")
    assert long_id in narrow  # the id is never cut, even when narrower than it
    assert max(len(line) for line in narrow.splitlines()) < max(len(x) for x in piped.split("\n"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.5e-06, "0.0000055"), (0.0016, "0.0016"), (0.00164444, "0.0016"), (12.5, "12.5"),
     (50.0, "50"), (1250.0, "1,250"), (123456.7, "123,457"), (0.0, "0")],
)  # fmt: skip
def test_numbers_print_as_people_read_them(value: float, text: str) -> None:
    assert number(value) == text
    assert "e-" not in gpu_hours(value)


def test_gpu_hours_in_records_carry_their_unit(capsys: pytest.CaptureFixture[str]) -> None:
    print_record({"gpu_hours": 5.5e-06, "used_gpu_hours": 0.0016, "gpus": 2})
    out = capsys.readouterr().out
    assert "0.0000055 GPU-h" in out and "0.0016 GPU-h" in out and "e-06" not in out
    assert gpu_hours(None) == "" and gpu_hours(2.0) == "2 GPU-h"
    assert number(math.inf) == "inf"


def test_an_error_with_a_pattern_prints_as_written(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: Not A Slug\nrun: 'true'\n")
    result = fabbrica("run", str(spec), env=offline_env())
    assert result.returncode == 2, result.stderr
    assert PATTERN in result.stderr and "Traceback" not in result.stderr


APPLY = ["apply", "--project", "P", "--call", "C", "--months", "1", "--declare-civilian-ai-act",
         "--gpu-hours"]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "bad"),
    [(APPLY, "nan"), (APPLY, "inf"), (APPLY, "-5"), (APPLY, "0"),
     (["decide", "1", "accept", "--gpu-hours"], "nan"),
     (["allocation", "top-up", "1", "--reason", "r", "--gpu-hours"], "-inf"),
     (["call", "set", "c", "--offered-gpu-hours"], "nan")],
)  # fmt: skip
def test_gpu_hours_must_be_a_finite_positive_number(command: list[str], bad: str) -> None:
    result = fabbrica(*command, bad, env=offline_env(COLUMNS="200"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "gpu-hours" in result.stderr
    assert "finite" in result.stderr or "above zero" in result.stderr


def test_a_workdir_outside_the_specs_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b"
    home.mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("not to be shared")
    spec = home / "job.yaml"
    spec.write_text("name: escape\nrun: 'true'\nworkdir: ../..\n")
    refused = fabbrica("run", str(spec), env=offline_env())
    assert refused.returncode == 2
    assert "outside the spec's folder" in refused.stderr and "--workdir" in refused.stderr
    link = home / "up"
    link.symlink_to(tmp_path)  # a symlink inside that points outside: refused too
    spec.write_text("name: escape\nrun: 'true'\nworkdir: up\n")
    assert fabbrica("run", str(spec), env=offline_env()).returncode == 2
    # named on the command line, the folder passes the check (and then the server is away)
    given = fabbrica("run", str(spec), "--workdir", str(tmp_path), env=offline_env())
    assert given.returncode == 1 and "cannot reach Fabbrica" in given.stderr
    spec.write_text("name: inside\nrun: 'true'\nworkdir: .\n")
    inside = fabbrica("run", str(spec), env=offline_env())
    assert inside.returncode == 1 and "cannot reach Fabbrica" in inside.stderr


def _archive(*members: tuple[str, str | None]) -> bytes:
    """A .tar.gz of (name, symlink target or None for a small file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, target in members:
            info = tarfile.TarInfo(name)
            if target is None:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"ok"))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
    return buffer.getvalue()


def _serving(archive: bytes) -> Client:
    """A real Client whose transport answers every request with `archive` (httpx
    MockTransport: the server cannot be made to send a hostile archive)."""
    api = Client("http://fabbrica.test", "t")
    api._http.close()
    api._http = httpx.Client(
        base_url="http://fabbrica.test/api/v1",
        transport=httpx.MockTransport(lambda _: httpx.Response(200, content=archive)),
    )
    return api


@pytest.mark.parametrize(
    ("member", "target"),
    [("outputs/passwd", "/etc/passwd"), ("outputs/up", "../../x"), ("../evil", None)],
)  # fmt: skip
def test_outputs_that_leave_the_folder_refuse_the_whole_download(
    tmp_path: Path, member: str, target: str | None
) -> None:
    data = _archive(("outputs/a.txt", None), (member, target), ("outputs/z.txt", None))
    into = tmp_path / "job-1"
    with pytest.raises(OutputsError) as direct:
        extract_outputs(data, into)
    with _serving(data) as api, pytest.raises(OutputsError) as refused:
        api.download(1, into)  # the SDK's download path, which `fabbrica download` calls
    for error in (direct.value, refused.value):
        assert repr(member) in error.message and error.member == member
        assert "nothing was extracted" in error.message
    assert "job 1" in refused.value.message
    assert not into.exists()  # nothing written, not even the folder
    assert os.listdir(tmp_path) == []
    shown = cli_error(refused.value)  # what `fabbrica download` prints
    assert shown.exit_code == FAILURE and repr(member) in shown.message


def test_outputs_within_the_folder_are_extracted(tmp_path: Path) -> None:
    data = _archive(("outputs/a.txt", None), ("outputs/link", "a.txt"))
    with _serving(data) as api:
        got = api.download(3, tmp_path / "out")
    assert got.folder == tmp_path / "out" and got.names == ["outputs/a.txt", "outputs/link"]
    assert (tmp_path / "out/outputs/link").read_text() == "ok"
    with pytest.raises(OutputsError, match="cannot unpack"):
        extract_outputs(b"not a tar at all", tmp_path / "bad")


def test_unusable_storage_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,duration,num_gpus,cluster\n0,100,1,a\n")
    cases = [
        (["db", "upgrade"], {"FABBRICA_DATABASE_URL": "not a url"}, 2, "FABBRICA_DATABASE_URL"),
        (["up", "--data-dir", str(blocker / "data"), "--port", str(free_port())], {}, 1,
         "data directory"),
        (["simulate", "--trace", str(trace), "--plot", str(blocker) + "/x.png"], {}, 2, "--plot"),
    ]  # fmt: skip
    for args, env, code, words in cases:
        result = fabbrica(*args, env=offline_env(**env))
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
