"""Accepted job submissions per second: Fabbrica (PostgreSQL, API replicas and a controller)
beside plain `sbatch --hold` on the Slurm testbed, the same client counts, from one run.

Fabbrica: makes a PostgreSQL database, starts `fabbrica serve` --replicas times (each on
its own port) and one `fabbrica controller` (the control loop, and the agent of `local`,
1 GPU), makes a startup with a Playground allocation on `local`, then from C client threads
(each one keep-alive HTTP connection to a replica, in turn) POSTs --jobs JSON job specs to
/jobs. Each job asks for the whole `local` factory for an hour: the first runs (a `sleep`),
the others stay queued, as held Slurm jobs do, so the machine does not run hundreds of jobs
while it is measured; the control loop still sees every one of them. Each round's jobs are
cancelled after it (untimed), as the sbatch round's are.

sbatch: C client threads run `sbatch --hold --parsable --wrap true` on the testbed's
it4lia cluster (as root, account root: no runuser in the way) --jobs times in all; each
round's jobs are cancelled with scancel by id right after it (they never run).

Beside Fabbrica's rate, the CPU time each submission cost (medians): the API processes,
the controller and PostgreSQL's backends of the bench's database (from /proc; a backend
that ends during the round takes its time with it: PostgreSQL's figure is then too low,
even negative, as when a pool opens and closes connections per request).

Each (system, clients) cell is the median of --rounds rounds, the rounds of the two
systems interleaved so a change of load hits both. Prints the table and the ratios
Fabbrica / sbatch, and the load average before and after.

    uv run --frozen python bench/submit_vs_sbatch.py [--jobs 600] [--clients 8,32]
        [--rounds 3] [--replicas 2] [--workers 1] [--no-sbatch]
"""

from __future__ import annotations

import argparse
import http.client
import json
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
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TESTBED = Path(os.environ.get("FABBRICA_TESTBED_DIR") or "/var/lib/fabbrica-testbed")
CLUSTER = "it4lia"
LOCAL_GPUS = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


class Plane:
    """`fabbrica serve` x replicas and one `fabbrica controller` on one PostgreSQL."""

    def __init__(self, database_url: str, replicas: int, workers: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fabbrica-bench-plane-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
        env.update(
            FABBRICA_BOOTSTRAP_TOKEN="t",
            FABBRICA_LOCAL_GPUS=str(LOCAL_GPUS),
            FABBRICA_LOG_LEVEL="warning",
            FABBRICA_DATABASE_URL=database_url,
        )
        cli = [sys.executable, "-m", "fabbrica"]
        out = subprocess.DEVNULL
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        first = True
        for _ in range(replicas):
            port = free_port()
            argv = [*cli, "serve", "--port", str(port), "--data-dir", str(self.dir)]
            if workers != 1:
                argv += ["--workers", str(workers)]
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)  # noqa: S603
            self.procs.append(proc)
            self.urls.append(f"http://127.0.0.1:{port}")
            if first:  # the first one migrates: the others then start at once
                wait_healthy(self.urls[0], proc)
                first = False
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_healthy(url, proc)
        controller = [*cli, "controller", "--data-dir", str(self.dir)]
        self.procs.append(subprocess.Popen(controller, env=env, stdout=out, stderr=out))  # noqa: S603

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def with_children(pids: list[int]) -> list[int]:
    """The processes and their children (the workers of `fabbrica serve --workers N`)."""
    found = list(pids)
    for pid in pids:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far (their children's: see
    with_children)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that ended: its time is lost (rare: the pool keeps them)
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def backend_pids(admin: Engine, database: str) -> list[int]:
    with admin.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
        )
        return [int(r[0]) for r in rows]


def setup(url: str) -> tuple[str, str]:
    """A member's token and a project with 500 GPU-hours on `local`."""
    admin = {"Authorization": "Bearer t"}
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as h:
        user = h.post("/users", headers=admin, json={"email": "b@startup.it", "name": "B"}).json()
        auth = {"Authorization": f"Bearer {user['token']}"}
        org = h.post("/organisations", headers=auth,
                     json={"name": "B", "country": "IT", "type": "startup"}).json()  # fmt: skip
        pid = h.post("/projects", headers=auth, json={"title": "B", "org_id": org["id"]}).json()
        applied = h.post("/proposals", headers=auth, json={
            "project_id": pid["id"], "call_id": "local-playground", "gpu_hours": 500,
            "months": 1, "declare_civilian_ai_act": True})  # fmt: skip
        assert applied.json()["state"] == "accepted", applied.text
    return user["token"], pid["id"]


def run_clients(jobs: int, clients: int, one: Callable[[int, int], None]) -> float:
    """Submissions per second: `clients` threads call one(client, n) for n in 0..jobs-1."""
    counter = iter(range(jobs))
    lock = threading.Lock()
    failures: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            try:
                one(c, n)
            except Exception as exc:
                failures.append(repr(exc)[:300])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} of {jobs} submissions failed, e.g. {failures[0]}")
    return jobs / elapsed


def fabbrica_round(
    urls: list[str], token: str, project: str, jobs: int, clients: int
) -> tuple[float, Callable[[], None]]:
    """Submissions per second, and what cancels the round's jobs (untimed, as the sbatch
    round's are cancelled), so that each round starts on the same queue."""
    spec = {"name": "b", "run": "sleep 3600",
            "resources": {"gpus": LOCAL_GPUS, "time_limit": "1h"}}  # fmt: skip
    body = json.dumps({"spec": spec, "project": project}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conns: dict[int, http.client.HTTPConnection] = {}
    ids: list[int] = []

    def call(c: int, path: str, payload: bytes, expect: int) -> bytes:
        conn = conns.get(c)
        if conn is None:
            host = urls[c % len(urls)].removeprefix("http://")
            conn = conns[c] = http.client.HTTPConnection(host, timeout=60)
        conn.request("POST", path, body=payload, headers=headers)
        r = conn.getresponse()
        answer = r.read()
        if r.status != expect:
            raise RuntimeError(f"{path}: {r.status} {answer[:200]!r}")
        return answer

    def submit(c: int, _n: int) -> None:
        ids.append(json.loads(call(c, "/api/v1/jobs", body, 201))["id"])

    def cancel(c: int, n: int) -> None:
        call(c, f"/api/v1/jobs/{ids[n]}/cancel", b"", 200)

    def cancel_all() -> None:
        try:
            run_clients(len(ids), clients, cancel)
        finally:
            for conn in conns.values():
                conn.close()

    try:
        return run_clients(jobs, clients, submit), cancel_all
    except BaseException:
        cancel_all()
        raise


def sbatch_round(cluster: dict[str, str], jobs: int, clients: int) -> float:
    env = {**os.environ, "SLURM_CONF": cluster["slurm_conf"]}
    argv = ["sbatch", "--hold", "--parsable", "-A", "root", "-p", cluster["partition"],
            "-J", "fabbrica-bench-held", "-t", "1", "-o", "/dev/null",
            "--wrap", "true"]  # fmt: skip
    ids: list[str] = []

    def one(_c: int, _n: int) -> None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        ids.append(done.stdout.strip().split(";")[0])

    try:
        return run_clients(jobs, clients, one)
    finally:
        for at in range(0, len(ids), 500):  # never leave a held job behind
            subprocess.run(["scancel", *ids[at : at + 500]], env=env, check=False)  # noqa: S603, S607


def testbed_cluster() -> dict[str, str]:
    bed = json.loads((TESTBED / "clusters.json").read_text())
    return next(c for c in bed["clusters"] if c["cluster"] == CLUSTER)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=600, help="submissions per round")
    parser.add_argument("--clients", default="8,32", help="client counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2, help="`fabbrica serve` processes")
    parser.add_argument("--workers", type=int, default=1, help="`fabbrica serve --workers`")
    parser.add_argument("--no-sbatch", action="store_true", help="Fabbrica only")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    cluster = None if args.no_sbatch else testbed_cluster()
    load_before = os.getloadavg()
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fabbrica_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[int, list[list[float]]] = {}  # clients -> per round: API, controller, PG ms
    plane = None
    try:
        plane = Plane(url, args.replicas, args.workers)
        token, project = setup(plane.urls[0])
        fabbrica_round(plane.urls, token, project, 50, 8)[1]()  # warm-up: connections, caches
        for n in range(args.rounds):
            for clients in counts:
                api = with_children([p.pid for p in plane.procs[:-1]])
                ctl = [plane.procs[-1].pid]
                pg = backend_pids(admin, name)
                before = (cpu_seconds(api), cpu_seconds(ctl), cpu_seconds(pg))
                rate, cancel = fabbrica_round(plane.urls, token, project, args.jobs, clients)
                after = (cpu_seconds(api), cpu_seconds(ctl), cpu_seconds(pg))
                cancel()
                ms = [(b - a) * 1000 / args.jobs for a, b in zip(before, after, strict=True)]
                cpu.setdefault(clients, []).append(ms)
                rates.setdefault(("Fabbrica", clients), []).append(rate)
                line = (
                    f"round {n + 1}, {clients} clients: Fabbrica {rate:.0f}/s (CPU ms each: "
                    f"API {ms[0]:.2f}, controller {ms[1]:.2f}, PostgreSQL {ms[2]:.2f})"
                )
                if cluster is not None:
                    rate = sbatch_round(cluster, args.jobs, clients)
                    rates.setdefault(("sbatch", clients), []).append(rate)
                    line += f", sbatch {rate:.0f}/s"
                print(line, flush=True)
    finally:
        if plane is not None:
            plane.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    load_after = os.getloadavg()
    table = Table(
        title=f"Accepted submissions/s, {args.jobs} per round, median of {args.rounds} rounds: "
        f"Fabbrica (PostgreSQL, {args.replicas} x `fabbrica serve` --workers {args.workers}, "
        f"`fabbrica controller`) and `sbatch --hold` on {CLUSTER}"
    )
    columns = ("clients", "Fabbrica /s", "min", "max", "CPU ms each: API", "controller",
               "PostgreSQL", "sbatch /s", "min", "max", "ratio")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for clients in counts:
        ours = rates[("Fabbrica", clients)]
        row = [str(clients), f"{statistics.median(ours):.0f}", f"{min(ours):.0f}",
               f"{max(ours):.0f}"]  # fmt: skip
        row += [f"{statistics.median(r[k] for r in cpu[clients]):.2f}" for k in range(3)]
        theirs = rates.get(("sbatch", clients))
        if theirs:
            ratio = statistics.median(ours) / statistics.median(theirs)
            row += [f"{statistics.median(theirs):.0f}", f"{min(theirs):.0f}",
                    f"{max(theirs):.0f}", f"{ratio:.2f}"]  # fmt: skip
        else:
            row += ["-", "-", "-", "-"]
        table.add_row(*row)
    console = Console(width=160)
    console.print(table)
    console.print(
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        highlight=False,
    )


if __name__ == "__main__":
    main()
