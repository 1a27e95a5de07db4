"""Data sets end to end: `fabbrica up` as a process and the CLI. An upload killed at about
half resumes without sending the first half again (bytes counted between the CLI and the
server), and what is stored is what was sent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fabbrica.client import pack_dataset
from tests.cli.proxy import CountingProxy
from tests.cli.server import Server, clean_env, fabbrica
from tests.cli.test_jobs_e2e import Cli, startup

pytestmark = pytest.mark.slow
SIZE = 32 * 1024 * 1024 + 12_345  # the bench uploads 200 MiB; 32 keep the suite quick


def test_a_killed_upload_resumes_without_sending_the_first_half_again(
    server: Server, tmp_path: Path
) -> None:
    cli, project = startup(server)
    big = tmp_path / "scans.bin"
    big.write_bytes(os.urandom(SIZE))
    args = ["dataset", "add", str(big), "--name", "scans", "--project", project,
            "--residency", "IT", "--class", "personal", "--json"]  # fmt: skip
    packed = pack_dataset(big)
    packed.file.close()
    with CountingProxy(server.port) as proxy:
        env = clean_env(FABBRICA_URL=proxy.url, FABBRICA_TOKEN=cli.token)
        proxy.reset(hold_at=packed.size // 2)
        first = subprocess.Popen(
            [sys.executable, "-m", "fabbrica", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proxy.holding.wait(120), first.communicate(timeout=5)
        first.kill()  # at about half of the upload
        first.communicate(timeout=10)
        proxy.release()
        # what the server has: the same bytes announced again find the upload
        body = {"project": project, "name": "scans", "size": packed.size,
                "sha256": packed.sha256}  # fmt: skip
        headers = {"Authorization": f"Bearer {cli.token}"}
        upload = httpx.post(f"{server.url}/api/v1/dataset-uploads", json=body, headers=headers)
        had = upload.json()["received"]
        assert packed.size * 0.4 <= had < packed.size, had

        proxy.reset()
        again = fabbrica(*args, env=env, timeout=120)
        assert again.returncode == 0, again.stderr
        sent = proxy.sent
    # the second run sent the rest, and not the first half again (headers: a few KiB)
    assert packed.size - had <= sent <= packed.size - had + 64 * 1024, (sent, had)
    added = json.loads(again.stdout)
    assert (added["name"], added["version"]) == ("scans", 1)
    [entry] = added["files"]
    assert entry == {"path": "scans.bin", "size": SIZE,
                     "sha256": hashlib.sha256(big.read_bytes()).hexdigest()}  # fmt: skip
    out = tmp_path / "out"
    got = cli.run("dataset", "download", "scans", "--to", str(out), "--json")
    assert got["version"] == 1
    assert hashlib.sha256((out / "scans.bin").read_bytes()).hexdigest() == entry["sha256"]


def test_dataset_commands_with_bad_input_and_another_tenant(server: Server, tmp_path: Path) -> None:
    cli, project = startup(server)
    folder = tmp_path / "digits"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "x.csv").write_text("1,2\n")
    (folder / "labels.csv").write_text("a\n")
    added = cli.run("dataset", "add", str(folder), "--name", "digits", "--project", project,
                    "--license", "CC-BY-4.0", "--json")  # fmt: skip
    assert set(added) >= {"id", "name", "version"} and added["version"] == 1
    listed = cli.run("dataset", "list", "--json")
    assert [(d["name"], d["version"], d["class"]) for d in listed] == [("digits", 1, "internal")]
    shown = cli.run("dataset", "show", str(added["id"]), "--json")
    assert sorted(f["path"] for f in shown["files"]) == ["labels.csv", "train/x.csv"]
    for bad, word in (
        (["--residency", "XX"], "residency"),
        (["--class", "personal"], "residency"),
        (["--name", "Bad Name"], "name"),
    ):
        opts = ["--name", "other", *bad] if bad[0] != "--name" else bad
        result = cli.run("dataset", "add", str(folder), "--project", project, *opts, code=2)
        assert word in result.stderr.lower(), result.stderr
    admin = Cli(server)
    token = admin.run("user", "add", "b@other.fr", "--name", "B", "--json")["token"]
    stranger = Cli(server, token)
    result = stranger.run("dataset", "show", str(added["id"]), code=2)
    assert "no data set" in result.stderr
    assert stranger.run("dataset", "list", "--json") == []
    deleted = cli.run("dataset", "delete", "digits", "--json")
    assert deleted == {"deleted": ["digits@1"]}
