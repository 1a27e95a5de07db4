"""A data set upload killed at half, then resumed: bytes and seconds of each run.

Starts `fabbrica up` (SQLite), makes a user and a project, writes a file of random bytes
(200 MiB by default), runs `fabbrica dataset add` through a TCP proxy that counts what the
CLI sends and holds it back past half of the upload, kills the CLI there, and runs it
again. Prints what each run sent, the time it took, and checks the stored sha256.

    uv run python bench/dataset_upload.py [--mib 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' proxy and server
from api_submit import Server  # the bench's own harness
from tests.cli.proxy import CountingProxy

from fabbrica.client import pack_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    server = Server(None)
    work = Path(tempfile.mkdtemp(prefix="fabbrica-bench-data-"))
    try:
        admin = {"Authorization": "Bearer t"}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            token = http.post("/users", headers=admin,
                              json={"email": "d@x.it", "name": "D"}).json()["token"]  # fmt: skip
            headers = {"Authorization": f"Bearer {token}"}
            body = {"name": "D", "country": "IT", "type": "startup"}
            org = http.post("/organisations", headers=headers, json=body).json()
            project = http.post("/projects", headers=headers,
                                json={"title": "D", "org_id": org["id"]}).json()["id"]  # fmt: skip
        big = work / "big.bin"
        with big.open("wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(1024 * 1024))
        packed = pack_dataset(big)
        packed.file.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
        command = [sys.executable, "-m", "fabbrica", "dataset", "add", str(big), "--name",
                   "big", "--project", project, "--json"]  # fmt: skip
        with CountingProxy(server.port) as proxy:
            env.update(FABBRICA_URL=proxy.url, FABBRICA_TOKEN=token)
            proxy.reset(hold_at=packed.size // 2)
            began = time.perf_counter()
            first = subprocess.Popen(  # noqa: S603 - our own CLI
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if not proxy.holding.wait(600):
                raise RuntimeError("the upload never reached half")
            first.kill()
            first.wait(10)
            first_s, first_sent = time.perf_counter() - began, proxy.sent
            proxy.release()
            proxy.reset()
            began = time.perf_counter()
            again = subprocess.run(  # noqa: S603 - our own CLI
                command, env=env, capture_output=True, text=True, check=True
            )
            second_s, second_sent = time.perf_counter() - began, proxy.sent
        stored = json.loads(again.stdout)["files"][0]["sha256"]
        digest = hashlib.sha256(big.read_bytes()).hexdigest()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"`fabbrica dataset add` of {args.mib} MiB, killed at half, resumed")
    for column in ("run", "bytes sent", "share of the upload", "seconds (packing included)"):
        table.add_column(column, justify="right")
    for name, sent, seconds in (
        ("killed", first_sent, first_s),
        ("resumed", second_sent, second_s),
    ):
        table.add_row(name, f"{sent:,}", f"{sent / packed.size:.1%}", f"{seconds:.1f}")
    total = first_sent + second_sent
    table.add_row("both", f"{total:,}", f"{total / packed.size:.1%}", f"{first_s + second_s:.1f}")
    Console().print(table)
    print(f"sha256 stored = sha256 of the file: {stored == digest}")


if __name__ == "__main__":
    main()
