"""API job submissions per second, on SQLite and on PostgreSQL, from one run.

Starts `fabbrica up` (a real server process, the control loop running) on each database,
makes a startup with a Playground allocation on `local`, then submits jobs (JSON spec, no
workdir) from several client threads over HTTP. Prints a table of medians over rounds and
the PostgreSQL / SQLite ratio. Then, on the same server, one request at a time: a job array
of --array-tasks tasks (`array: 1-N`) and a batch of 1,000 specs (POST /job-batches), each
timed from request to answer, median of the rounds, against the 2 s target for 10,000 tasks.

    uv run python bench/api_submit.py [--jobs 400] [--clients 8] [--rounds 3] [--array-tasks 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, database_url: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fabbrica-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
        env.update(
            FABBRICA_BOOTSTRAP_TOKEN="t", FABBRICA_LOCAL_GPUS="64", FABBRICA_LOG_LEVEL="warning"
        )
        if database_url:
            env["FABBRICA_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "fabbrica", "up", "--port", str(self.port),
             "--data-dir", str(self.dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("fabbrica up did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


def setup(url: str) -> tuple[dict[str, str], str]:
    admin = {"Authorization": "Bearer t"}
    with httpx.Client(base_url=url, timeout=30) as http:
        user = http.post(
            "/users", headers=admin, json={"email": "b@startup.it", "name": "B"}
        ).json()
        headers = {"Authorization": f"Bearer {user['token']}"}
        org = http.post(
            "/organisations",
            headers=headers,
            json={"name": "B", "country": "IT", "type": "startup"},
        ).json()
        project = http.post("/projects", headers=headers, json={"title": "B", "org_id": org["id"]})
        pid = project.json()["id"]
        applied = http.post("/proposals", headers=headers, json={
            "project_id": pid, "call_id": "local-playground", "gpu_hours": 5000, "months": 1,
            "declare_civilian_ai_act": True})  # fmt: skip
        assert applied.json()["state"] == "accepted", applied.text
    return headers, pid


def submit_round(url: str, headers: dict[str, str], project: str, jobs: int, clients: int) -> float:
    counter = iter(range(jobs))
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                spec = {"name": f"b{n}", "run": "true", "resources": {"time_limit": "1m"}}
                body = {"spec": spec, "project": project}
                r = http.post("/jobs", json=body)
                if r.status_code != 201:
                    failures.append(r.text)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} submissions failed, e.g. {failures[0]}")
    return jobs / elapsed


def one_request(url: str, headers: dict[str, str], path: str, body: object) -> float:
    """Seconds from sending one submission to its answer."""
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        began = time.perf_counter()
        r = http.post(path, json=body)
        elapsed = time.perf_counter() - began
    if r.status_code != 201:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return elapsed


def array_seconds(url: str, headers: dict[str, str], project: str, tasks: int) -> float:
    spec = {"name": "sweep", "run": "true", "resources": {"time_limit": "1m"},
            "array": f"1-{tasks}"}  # fmt: skip
    return one_request(url, headers, "/jobs", {"spec": spec, "project": project})


def batch_seconds(url: str, headers: dict[str, str], project: str, jobs: int) -> float:
    items = [{"spec": {"name": f"b{n}", "run": "true", "resources": {"time_limit": "1m"}},
              "project": project} for n in range(jobs)]  # fmt: skip
    return one_request(url, headers, "/job-batches", {"jobs": items})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--array-tasks", type=int, default=10_000)
    args = parser.parse_args()
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    pg_name = f"fabbrica_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
    pg_url = admin.url.set(database=pg_name).render_as_string(hide_password=False)
    table = Table(title=f"API submissions: {args.jobs} jobs x {args.rounds} rounds, "
                        f"{args.clients} client threads, over HTTP to `fabbrica up`")  # fmt: skip
    for column in ("database", "median jobs/s", "min", "max"):
        table.add_column(column, justify="right")
    medians = {}
    one = Table(title="One request: a job array and a batch, seconds from request to answer")
    for column in ("database", f"array of {args.array_tasks:,} tasks, median s", "max",
                   "under 2 s", "batch of 1,000 specs, median s", "max"):  # fmt: skip
        one.add_column(column, justify="right")
    try:
        for name, url in (("SQLite", None), ("PostgreSQL", pg_url)):
            server = Server(url)
            try:
                headers, project = setup(server.url)
                rates = [submit_round(server.url, headers, project, args.jobs, args.clients)
                         for _ in range(args.rounds)]  # fmt: skip
                arrays = [array_seconds(server.url, headers, project, args.array_tasks)
                          for _ in range(args.rounds)]  # fmt: skip
                batches = [batch_seconds(server.url, headers, project, 1000)
                           for _ in range(args.rounds)]  # fmt: skip
                a, b = statistics.median(arrays), statistics.median(batches)
                one.add_row(name, f"{a:.3f}", f"{max(arrays):.3f}", "yes" if a < 2 else "NO",
                            f"{b:.3f}", f"{max(batches):.3f}")  # fmt: skip
            finally:
                server.stop()
            medians[name] = statistics.median(rates)
            table.add_row(name, f"{medians[name]:.1f}", f"{min(rates):.1f}", f"{max(rates):.1f}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
    console = Console()
    console.print(table)
    console.print(f"PostgreSQL / SQLite: {medians['PostgreSQL'] / medians['SQLite']:.2f}")
    console.print(one)
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
