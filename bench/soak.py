"""A soak run of the control plane as deployed: two `fabbrica serve` replicas and a
`fabbrica controller` on PostgreSQL, four site agents (`fabbrica agent --backend local`,
syncing every second) and simulated users submitting, cancelling, reading logs and listing
their jobs over HTTP, spread over both replicas, for a bounded time (at most 10 minutes).

Prints, per kind of request: how many, errors, p50/p99/max latency; and each process's
resident memory (RSS) after the warm-up and at the end, with its growth (the target: under
10%). `--json` prints the same as one object.

    uv run python bench/soak.py [--minutes 10] [--users 50] [--agents 4] [--warmup 60]
        [--submit-share 0.35] [--in-flight 0] [--json]

`--submit-share` is the share of a user's requests that submit a job: at 0.35, 50 users
submit faster than four agents run, and the queue grows through the run. `--in-flight N`
makes each user a script that keeps at most N of its jobs unfinished: at the limit, a
submission becomes a read of its oldest unfinished job (which, once ended, frees a place).
The queue then stays level whatever the machine's speed, which tells a process's own
memory growth from its queue's. The number of jobs queued is sampled every 10 s and its
first, lowest, highest and last values are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FACTORIES = ("it4lia", "jaif", "lumi-aif", "bsc-aif", "mimer", "meluxina-ai")
ADMIN = {"Authorization": "Bearer t"}
MAX_MINUTES = 10.0
ENDED = {"succeeded", "failed", "cancelled", "timed_out"}
QUEUE_SAMPLE_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "fabbrica", *self.args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def rss_mib(self) -> float:
        """Resident memory of the process, MiB (from /proc)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Latencies:
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, http: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            response = http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[kind].append(repr(exc)[:200])
            return None
        elapsed = time.perf_counter() - began
        with self.lock:
            self.seconds[kind].append(elapsed)
            if response.status_code >= 500 or response.status_code in (401, 403, 404):
                self.errors[kind].append(f"{response.status_code} {response.text[:200]}")
        return response


def wait_healthy(url: str, what: Proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not what.alive():
            raise RuntimeError(f"{what.name} ended: {what.log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what.name} did not answer within {seconds} s")


def make_user(url: str, n: int, factory: str) -> tuple[dict[str, str], str]:
    """A user with a project whose Playground allocation is at `factory`."""
    with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as http:
        user = http.post("/users", headers=ADMIN, json={"email": f"u{n}@soak.it", "name": f"U{n}"})
        headers = {"Authorization": f"Bearer {user.json()['token']}"}
        org = http.post("/organisations", headers=headers,
                        json={"name": f"Soak {n}", "country": "IT", "type": "startup"})  # fmt: skip
        project = http.post("/projects", headers=headers,
                            json={"title": f"Soak {n}", "org_id": org.json()["id"]})  # fmt: skip
        pid = project.json()["id"]
        applied = http.post("/proposals", headers=headers, json={
            "project_id": pid, "call_id": f"{factory}-playground", "gpu_hours": 500,
            "months": 1, "declare_civilian_ai_act": True})  # fmt: skip
        if applied.json().get("state") != "accepted":
            raise RuntimeError(f"u{n} at {factory}: {applied.text[:300]}")
    return headers, pid


def user_loop(
    urls: list[str], headers: dict[str, str], project: str, stop: threading.Event,
    record: Latencies, seed: int, submit_share: float = 0.35, in_flight: int = 0,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=f"{u}/api/v1", headers=headers, timeout=30) for u in urls]
    mine: list[int] = []
    unfinished: list[int] = []  # oldest first; kept only with --in-flight
    try:
        while not stop.is_set():
            http = rng.choice(clients)
            roll = rng.random()
            if in_flight and len(unfinished) >= in_flight and (roll < submit_share or not mine):
                r = record.timed("job", http, "GET", f"/jobs/{unfinished[0]}")
                if r is not None and r.status_code == 200 and r.json()["state"] in ENDED:
                    unfinished.pop(0)
            elif roll < submit_share or not mine:
                spec = {"name": "soak", "run": f"echo soak; sleep {rng.randint(1, 4)}",
                        "resources": {"gpus": 1, "time_limit": "5m"}}  # fmt: skip
                r = record.timed("submit", http, "POST", "/jobs",
                                 json={"spec": spec, "project": project})  # fmt: skip
                if r is not None and r.status_code == 201:
                    mine.append(int(r.json()["id"]))
                    mine = mine[-20:]
                    if in_flight:
                        unfinished.append(mine[-1])
            elif roll < submit_share + 0.1:
                record.timed("cancel", http, "POST", f"/jobs/{rng.choice(mine)}/cancel")
            elif roll < submit_share + 0.1 + (1 - submit_share - 0.1) * 0.55:
                record.timed("logs", http, "GET", f"/jobs/{rng.choice(mine)}/logs")
            elif roll < submit_share + 0.1 + (1 - submit_share - 0.1) * 0.82:
                record.timed("job", http, "GET", f"/jobs/{rng.choice(mine)}")
            else:
                record.timed("list", http, "GET", "/jobs", params={"project_id": project})
            stop.wait(rng.uniform(0.5, 1.5))  # a person, or a script polling
    finally:
        for c in clients:
            c.close()


def jobs_by_state(db_url: str) -> dict[str, int]:
    """How many jobs are in each state (the queue's length shapes the controller's memory)."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all()
    engine.dispose()
    return {state: int(count) for state, count in sorted(rows)}


def sample_queue(db_url: str, stop: threading.Event, samples: list[int]) -> None:
    """The number of queued jobs every QUEUE_SAMPLE_SECONDS until `stop`."""
    engine = create_engine(db_url)
    try:
        while not stop.is_set():
            with engine.connect() as conn:
                queued = conn.execute(text("SELECT count(*) FROM jobs WHERE state = 'queued'"))
                samples.append(int(queued.scalar_one()))
            stop.wait(QUEUE_SAMPLE_SECONDS)
    finally:
        engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=MAX_MINUTES)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--agents", type=int, default=4, choices=range(1, len(FACTORIES) + 1))
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the first RSS")
    parser.add_argument("--submit-share", type=float, default=0.35,
                        help="share of requests that submit")  # fmt: skip
    parser.add_argument("--in-flight", type=int, default=0,
                        help="each user keeps at most N jobs unfinished (0: no limit)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    minutes = min(args.minutes, MAX_MINUTES)
    home = Path(tempfile.mkdtemp(prefix="fabbrica-soak-"))
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    db_name = f"fabbrica_soak_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    db_url = engine.url.set(database=db_name).render_as_string(hide_password=False)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
    env = {**base_env, "FABBRICA_DATABASE_URL": db_url, "FABBRICA_BOOTSTRAP_TOKEN": "t",
           "FABBRICA_LOG_LEVEL": "warning", "FABBRICA_LOCAL_GPUS": "4"}  # fmt: skip
    procs: list[Proc] = []
    stop = threading.Event()
    try:
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i, port in enumerate(ports):
            serve = ["serve", "--port", str(port), "--data-dir", str(home / "data")]
            procs.append(Proc(f"serve-{i + 1}", serve, env, home / f"serve-{i + 1}.log").start())
            wait_healthy(urls[i], procs[-1])
        procs.append(Proc("controller", ["controller", "--data-dir", str(home / "data")], env,
                          home / "controller.log").start())  # fmt: skip
        factories = FACTORIES[: args.agents]
        with httpx.Client(base_url=f"{urls[0]}/api/v1", timeout=30) as http:
            tokens = {f: http.post(f"/agents/{f}/token", headers=ADMIN).json()["token"]
                      for f in factories}  # fmt: skip
        for i, factory in enumerate(factories):
            agent_env = {**base_env, "FABBRICA_URL": urls[i % 2], "FABBRICA_TOKEN": tokens[factory]}
            procs.append(Proc(f"agent-{factory}", ["agent", "--factory", factory, "--backend",
                              "local", "--gpus", "8", "--interval", "1", "--work-dir",
                              str(home / f"agent-{factory}")], agent_env,
                              home / f"agent-{factory}.log").start())  # fmt: skip
        users = [make_user(urls[n % 2], n, factories[n % len(factories)])
                 for n in range(args.users)]  # fmt: skip
        record = Latencies()
        threads = [threading.Thread(target=user_loop,
                                    args=(urls, h, p, stop, record, n, args.submit_share,
                                          args.in_flight))
                   for n, (h, p) in enumerate(users)]  # fmt: skip
        queue_samples: list[int] = []
        threads.append(threading.Thread(target=sample_queue, args=(db_url, stop, queue_samples)))
        began = time.monotonic()
        for t in threads:
            t.start()
        if not args.json:
            print(f"soak: {args.users} users, {len(factories)} agents, 2 replicas, "
                  f"{minutes:g} min (warm-up {args.warmup:g} s)", file=sys.stderr)  # fmt: skip
        stop.wait(min(args.warmup, minutes * 60 / 2))
        first = {p.name: p.rss_mib() for p in procs}
        queued_first = jobs_by_state(db_url)
        stop.wait(max(0.0, began + minutes * 60 - time.monotonic()))
        last = {p.name: p.rss_mib() for p in procs if p.alive()}
        queued_last = jobs_by_state(db_url)
        stop.set()
        for t in threads:
            t.join(60)
        dead = [p.name for p in procs if not p.alive()]
        report = {
            "minutes": minutes, "users": args.users, "agents": len(factories),
            "requests": {
                kind: {"count": len(s), "errors": len(record.errors[kind]),
                       "p50_ms": round(statistics.median(s) * 1000, 1),
                       "p99_ms": round(percentile(s, 0.99) * 1000, 1),
                       "max_ms": round(max(s) * 1000, 1),
                       "error_examples": record.errors[kind][:3]}
                for kind, s in sorted(record.seconds.items())
            },
            "memory_mib": {
                name: {"after_warmup": round(first[name], 1),
                       "end": round(last.get(name, float("nan")), 1),
                       "growth_pct": round((last.get(name, float("nan")) / first[name] - 1)
                                           * 100, 1)}
                for name in first
            },
            "jobs_by_state": {"after_warmup": queued_first, "end": queued_last},
            "queued": {"first": queue_samples[0], "min": min(queue_samples),
                       "max": max(queue_samples), "last": queue_samples[-1],
                       "samples": len(queue_samples)},
            "in_flight": args.in_flight, "submit_share": args.submit_share,
            "ended_early": dead,
            "load_average": round(os.getloadavg()[0], 1),
        }  # fmt: skip
    finally:
        stop.set()
        for p in reversed(procs):
            p.stop()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    console = Console()
    requests = Table(
        title=f"Soak: {minutes:g} min, {args.users} users, {len(factories)} agents syncing "
        "every second, 2 API replicas + a controller on PostgreSQL"
    )
    for column in ("request", "count", "errors", "p50 ms", "p99 ms", "max ms"):
        requests.add_column(column, justify="right")
    for kind, row in report["requests"].items():
        requests.add_row(kind, str(row["count"]), str(row["errors"]), str(row["p50_ms"]),
                         str(row["p99_ms"]), str(row["max_ms"]))  # fmt: skip
    all_seconds = [s for v in record.seconds.values() for s in v]
    console.print(requests)
    console.print(f"all requests: p99 {percentile(all_seconds, 0.99) * 1000:.1f} ms")
    memory = Table(title="Resident memory (MiB): after the warm-up, at the end")
    for column in ("process", "after warm-up", "end", "growth %", "under 10%"):
        memory.add_column(column, justify="right")
    for name, row in report["memory_mib"].items():
        ok = "yes" if row["growth_pct"] < 10 else "NO"
        memory.add_row(name, str(row["after_warmup"]), str(row["end"]), str(row["growth_pct"]), ok)
    console.print(memory)
    for kind, row in report["requests"].items():
        for example in row["error_examples"]:
            console.print(f"error ({kind}): {example}")
    console.print(f"jobs by state after the warm-up: {report['jobs_by_state']['after_warmup']}")
    console.print(f"jobs by state at the end: {report['jobs_by_state']['end']}")
    q = report["queued"]
    console.print(
        f"jobs queued, every {QUEUE_SAMPLE_SECONDS:g} s: first {q['first']}, lowest "
        f"{q['min']}, highest {q['max']}, last {q['last']} ({q['samples']} samples)"
    )
    if dead:
        console.print(f"ended early: {', '.join(dead)}")
    console.print(f"load average {report['load_average']} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
