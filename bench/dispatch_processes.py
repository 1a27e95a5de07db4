"""Submit-to-running time across processes, on PostgreSQL, from one run.

Starts two `fabbrica serve` replicas, one `fabbrica controller` and a site agent
(`fabbrica agent --backend local`, factory jaif) on a throw-away database of the test
PostgreSQL server (FABBRICA_TEST_POSTGRES_URL). The controller's loop and the agent's
syncs both have a 30 s interval, so a job that runs sooner was woken: the submission
through replica A notifies the controller, whose offer wakes the agent's sync held by
replica B. N times, one job after the other on the idle factory: POST the job to A, poll
it every 10 ms until it shows `running`. Prints min / median / max and the load average.

    uv run --frozen python bench/dispatch_processes.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_submit import PG_ADMIN, free_port  # the bench's own harness

INTERVAL = "30"
FACTORY = "jaif"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "fabbrica", *args], env=env, stdout=out, stderr=out
        )


def healthy(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def ok(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    if response.status_code >= 300:
        raise RuntimeError(response.text)
    return response.json()  # type: ignore[no-any-return]


def one_job(http: httpx.Client, project: str, n: int) -> float:
    spec = {"name": f"p{n}", "run": "sleep 3", "resources": {"gpus": 1, "time_limit": "1m"}}
    began = time.perf_counter()
    job_id = ok(http.post("/jobs", json={"spec": spec, "project": project}))["id"]
    while time.perf_counter() - began < 60:
        state = ok(http.get(f"/jobs/{job_id}"))["state"]
        if state == "running":
            return time.perf_counter() - began
        if state in ("failed", "cancelled", "succeeded", "lost"):
            raise RuntimeError(f"job {job_id} ended {state} before it was seen running")
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} not running after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    admin_engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fabbrica_bench_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    home = Path(tempfile.mkdtemp(prefix="fabbrica-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
    env.update(
        FABBRICA_DATABASE_URL=url, FABBRICA_BOOTSTRAP_TOKEN="t", FABBRICA_LOCAL_GPUS="0",
        FABBRICA_LOG_LEVEL="warning", FABBRICA_LOOP_INTERVAL_SECONDS=INTERVAL,
        FABBRICA_AGENT_LEASE_SECONDS="600", FABBRICA_AGENT_WAIT_SECONDS="60",
    )  # fmt: skip
    procs = []
    samples = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            serve = ["serve", "--port", str(port), "--data-dir", str(home / "data")]
            procs.append(spawn(serve, env, home / f"serve-{port}.log"))
        procs.append(spawn(["controller", "--data-dir", str(home / "data")], env,
                           home / "controller.log"))  # fmt: skip
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        healthy(a)
        healthy(b)
        admin = httpx.Client(base_url=f"{a}/api/v1", headers={"Authorization": "Bearer t"})
        token = ok(admin.post(f"/agents/{FACTORY}/token", json={}))["token"]
        user = ok(admin.post("/users", json={"email": "b@startup.it", "name": "B"}))["token"]
        http = httpx.Client(base_url=f"{a}/api/v1", headers={"Authorization": f"Bearer {user}"},
                            timeout=30)  # fmt: skip
        org = ok(http.post("/organisations",
                           json={"name": "B", "country": "IT", "type": "startup"}))  # fmt: skip
        project = ok(http.post("/projects", json={"title": "B", "org_id": org["id"]}))["id"]
        ok(http.post("/proposals", json={
            "project_id": project, "call_id": f"{FACTORY}-playground", "gpu_hours": 500,
            "months": 1, "declare_civilian_ai_act": True}))  # fmt: skip
        agent_env = {k: v for k, v in env.items() if not k.startswith("FABBRICA_")}
        agent_env.update(FABBRICA_URL=b, FABBRICA_TOKEN=token)
        procs.append(spawn(["agent", "--factory", FACTORY, "--backend", "local", "--gpus", "2",
                            "--interval", INTERVAL, "--work-dir", str(home / "agent")],
                           agent_env, home / "agent.log"))  # fmt: skip
        for _ in range(300):
            rows = ok(admin.get("/agents"))
            if any(r["factory"] == FACTORY and r["capacity"] for r in rows):
                break
            time.sleep(0.1)
        time.sleep(3)
        one_job(http, project, -1)  # warm up: first imports, first launch
        time.sleep(3.5)
        for n in range(args.runs):
            samples.append(one_job(http, project, n))
            time.sleep(3.5)  # the factory idle again before the next one
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
    console = Console()
    console.print(
        f"submit (replica A) to running (agent held by replica B, controller apart), "
        f"PostgreSQL, {args.runs} jobs one after the other; loop and agent interval "
        f"{INTERVAL} s: min {min(samples):.3f} s, median {statistics.median(samples):.3f} s, "
        f"max {max(samples):.3f} s"
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
