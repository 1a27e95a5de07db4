"""The quick `fabbrica run` (fabbrica.cli.quick_run) against a real `fabbrica up`: its
output, messages and exit codes are the full Typer path's, line for line, and it imports
none of the heavy modules (issue 17: the process starts and uploads in under 0.3 s)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from fabbrica.client import Client
from tests.cli.server import Server, clean_env, free_port
from tests.cli.test_jobs_e2e import startup

pytestmark = pytest.mark.slow
HEAVY = ("typer", "click", "rich", "httpx", "pydantic", "yaml", "fabbrica.client._client")
# the quick path as `fabbrica` runs it; the heavy modules it imported, written at exit
QUICK = f"""
import atexit, sys
MARK = sys.argv.pop(1)
def _imported():
    with open(MARK, "w") as out:
        out.write(" ".join(m for m in {HEAVY!r} if m in sys.modules))
atexit.register(_imported)
from fabbrica.cli.main import main
main()
"""
# the full path: the Typer app, as every line but a quick `run` goes
FULL = "import sys\nfrom fabbrica.cli.app import run\nrun(sys.argv[1:])\n"
# what differs between two submissions of the same job
SYSTEM_CERTS = Path(ssl.get_default_verify_paths().openssl_cafile)
VARYING = ("id", "array_id", "submitted_at", "started_at", "ended_at", "state", "reason", "factory")


def both(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], list[str]]:
    """The quick and the full path's results for `fabbrica ARGS`, and the heavy modules the
    quick one imported."""
    mark = tmp_path / "imported.txt"
    quick = subprocess.run(
        [sys.executable, "-c", QUICK, str(mark), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    full = subprocess.run(
        [sys.executable, "-c", FULL, *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return quick, full, mark.read_text().split()


def same(quick: subprocess.CompletedProcess[str], full: subprocess.CompletedProcess[str]) -> None:
    assert (quick.returncode, quick.stdout, quick.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )


def record(text: str) -> dict[str, str]:
    """`key  value` lines as printed for people, without what differs between two jobs."""
    pairs = (re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines())
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs if p[0] not in VARYING}


@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)
def test_the_quick_run_prints_what_the_full_path_prints(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    env = server.client_env(cli.token)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "train.py").write_text("print('hello')\n")
    (work / "data" / "a.csv").write_text("a,b\n1,2\n" * 50)
    (work / ".git").mkdir()
    (work / ".git" / "HEAD").write_text("ref: main\n")
    spec = work / "job.yaml"
    spec.write_text("name: quick\nrun: python train.py  # here\nresources: {time_limit: 5m}\n")
    array = work / "array.yaml"
    array.write_text("name: sweep\nrun: 'true'\narray: 1-3\n")

    # success, for people: the same record (but the job's id and times)
    quick, full, heavy = both(tmp_path, env, "run", str(spec), "--project", project)
    assert heavy == [] and quick.returncode == full.returncode == 0, (quick, full)
    assert quick.stderr == full.stderr == "\n"  # where the progress bar was not drawn
    assert record(quick.stdout) == record(full.stdout)
    assert record(quick.stdout)["name"] == "quick"
    assert [line.split()[0] for line in quick.stdout.splitlines()] == [
        line.split()[0] for line in full.stdout.splitlines()
    ]  # the same keys in the same order, the same widths
    assert [len(line) - len(line.lstrip()) for line in quick.stdout.splitlines()] == [
        len(line) - len(line.lstrip()) for line in full.stdout.splitlines()
    ]

    # success, --json (the project from the flag's `=` form), and the workdir it sent
    quick, full, heavy = both(tmp_path, env, "run", f"--project={project}", str(spec), "--json")
    assert heavy == [] and quick.returncode == full.returncode == 0, (quick, full)
    quick_job, full_job = json.loads(quick.stdout), json.loads(full.stdout)
    assert list(quick_job) == list(full_job)
    assert _without(quick_job, VARYING) == _without(full_job, VARYING)
    assert quick.stdout.count("\n") == full.stdout.count("\n")  # the same indentation
    assert quick.stderr == full.stderr == "\n"
    # --workdir names the folder (the spec's own `workdir` is not read then)
    named = ("run", str(spec), "--workdir", str(work / "data"), "--project", project, "--json")
    quick, full, heavy = both(tmp_path, env, *named)
    assert heavy == [] and quick.returncode == full.returncode == 0, (quick, full)
    assert _without(json.loads(quick.stdout), VARYING) == _without(json.loads(full.stdout), VARYING)

    # the workdir the quick path packed: its files, not .git
    listing = work / "list.yaml"
    listing.write_text("name: ls\nrun: find . -type f | sort\n")
    quick, _, heavy = both(tmp_path, env, "run", str(listing), "--project", project, "--json")
    assert heavy == [] and quick.returncode == 0, quick
    with Client(server.url, cli.token) as sdk:
        listed = json.loads(quick.stdout)["id"]
        assert sdk.wait(listed, timeout=90)["state"] == "succeeded"
        files = [f for f in sdk.logs(listed).split() if not f.startswith("./.fabbrica")]
    assert files == ["./array.yaml", "./data/a.csv", "./job.yaml", "./list.yaml", "./train.py"]

    # an array: the same line on stderr, then the first task
    quick, full, heavy = both(tmp_path, env, "run", str(array), "--project", project)
    assert heavy == [] and quick.returncode == full.returncode == 0, (quick, full)
    assert _without_ids(quick.stderr) == _without_ids(full.stderr) != "\n"
    assert record(quick.stdout) == record(full.stdout)

    # a bad spec: the quick path sends it, the server refuses it, the message is the full
    # path's own (which refuses it before sending): exit 2 naming the field
    for text, field in [("name: x\nrun: y\nresources: {gpus: 0}\n", "resources.gpus"),
                        ("name: x\nrun: y\ncolour: blue\n", "colour"),
                        ("name: [x\n", "")]:  # fmt: skip
        spec.write_text(text)
        quick, full, heavy = both(tmp_path, env, "run", str(spec), "--project", project)
        same(quick, full)
        assert quick.returncode == 2 and field in quick.stderr and "error:" in quick.stderr

    # refusals the server alone makes: a project that does not exist, a bad token
    spec.write_text("name: x\nrun: y\n")
    quick, full, heavy = both(tmp_path, env, "run", str(spec), "--project", "nope")
    same(quick, full)
    assert quick.returncode == 2 and "HTTP 4" in quick.stderr
    quick, full, heavy = both(tmp_path, env | {"FABBRICA_TOKEN": "wrong"}, "run", str(spec))
    same(quick, full)
    assert quick.returncode in (1, 2) and "HTTP 401" in quick.stderr

    # a missing file, a workdir outside the spec's folder, a spec the quick path leaves to
    # the full one (its workdir needs a YAML parser): the same, whichever path answers
    quick, full, heavy = both(tmp_path, env, "run", str(work / "missing.yaml"))
    same(quick, full)
    assert quick.returncode == 2 and "cannot read" in quick.stderr
    spec.write_text("name: x\nrun: y\nworkdir: ../..\n")
    quick, full, heavy = both(tmp_path, env, "run", str(spec))
    same(quick, full)
    assert quick.returncode == 2 and "outside the spec's folder" in quick.stderr
    spec.write_text('{"name": "x", "run": "y", "workdir": "data"}')
    quick, full, heavy = both(tmp_path, env, "run", str(spec), "--project", project, "--json")
    assert quick.returncode == full.returncode == 0 and "typer" in heavy  # the full path ran

    # the server down: the same message, exit 1
    down = clean_env(FABBRICA_URL=f"http://127.0.0.1:{free_port()}", FABBRICA_TOKEN="t")
    spec.write_text("name: x\nrun: y\n")
    quick, full, heavy = both(tmp_path, down, "run", str(spec))
    same(quick, full)
    assert quick.returncode == 1 and "cannot reach Fabbrica" in quick.stderr

    # flags the quick path leaves to Typer: the same usage errors
    for args in (["run"], ["run", str(spec), "--wait", "--follow", "--template", "t"],
                 ["run", str(spec), "--projekt", "x"], ["run", str(spec), "extra"]):  # fmt: skip
        quick, full, heavy = both(tmp_path, env, *args)
        same(quick, full)
        assert quick.returncode == 2


def _without(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _without_ids(text: str) -> str:
    return re.sub(r"\d+", "N", text)


class TlsProxy:
    """HTTPS in front of a plain HTTP server: a certificate of its own for 127.0.0.1
    (trusted through SSL_CERT_FILE, as httpx and the quick path both read it)."""

    def __init__(self, upstream_port: int, folder: Path) -> None:
        self.cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def start() -> None:
            server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
            ready.set_result(server.sockets[0].getsockname()[1])
            await server.serve_forever()

        threading.Thread(target=self.loop.run_until_complete, args=(start(),), daemon=True).start()
        self.url = f"https://127.0.0.1:{ready.result(30)}"


@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)
def test_the_quick_run_over_https_as_the_full_path(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    proxy = TlsProxy(server.port, tmp_path)
    env = server.client_env(cli.token) | {"FABBRICA_URL": proxy.url}
    env["SSL_CERT_FILE"] = str(proxy.cert)
    spec = tmp_path / "work" / "job.yaml"
    spec.parent.mkdir()
    spec.write_text("name: tls\nrun: 'true'\n")
    quick, full, heavy = both(tmp_path, env, "run", str(spec), "--project", project, "--json")
    assert heavy == [] and quick.returncode == full.returncode == 0, (quick, full)
    assert _without(json.loads(quick.stdout), VARYING) == _without(json.loads(full.stdout), VARYING)
    # a certificate it does not trust (the system's authorities only): nothing is sent, and
    # the full path says why
    untrusted = env | {"SSL_CERT_FILE": str(SYSTEM_CERTS)}
    quick, full, heavy = both(tmp_path, untrusted, "run", str(spec), "--project", project)
    same(quick, full)
    assert quick.returncode == 1 and "cannot reach Fabbrica" in quick.stderr and "typer" in heavy
