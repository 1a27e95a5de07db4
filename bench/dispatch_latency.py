"""Submit-to-running time of one job on the embedded default, from one run.

Starts `fabbrica up` (SQLite, the control loop and the local factory's agent in the same
process, the local executor), makes a startup with a Playground allocation on `local`, then
N times, one job after the other on the idle factory: POSTs a job (JSON spec, no workdir,
`sleep 3`) and polls the job every 10 ms until Fabbrica shows it `running`; also notes when
it shows `dispatched`. Prints min / median / max of each and the load average.

    uv run --frozen python bench/dispatch_latency.py [--runs 10]

To measure another tree with the same environment: PYTHONPATH=/that/tree/src (the server
process inherits it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_submit import Server, setup  # the bench's own harness


def one_job(http: httpx.Client, project: str, n: int) -> tuple[float, float]:
    """Seconds from the POST until `dispatched` and until `running` were first seen."""
    spec = {"name": f"d{n}", "run": "sleep 3", "resources": {"time_limit": "1m"}}
    began = time.perf_counter()
    made = http.post("/jobs", json={"spec": spec, "project": project})
    if made.status_code != 201:
        raise RuntimeError(made.text)
    job_id = made.json()["id"]
    dispatched = None
    while time.perf_counter() - began < 60:
        state = http.get(f"/jobs/{job_id}").json()["state"]
        now = time.perf_counter() - began
        if state in ("dispatched", "running") and dispatched is None:
            dispatched = now
        if state == "running":
            return dispatched or now, now
        if state in ("failed", "cancelled", "succeeded", "lost"):
            raise RuntimeError(f"job {job_id} ended {state} before it was seen running")
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} not running after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    server = Server(None)
    try:
        headers, project = setup(server.url)
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            one_job(http, project, -1)  # warm up: first imports, first launch
            time.sleep(3.5)
            samples = []
            for n in range(args.runs):
                samples.append(one_job(http, project, n))
                time.sleep(3.5)  # the factory idle again before the next one
    finally:
        server.stop()
    table = Table(title=f"submit to state on the embedded default (`fabbrica up`, SQLite, "
                        f"local executor), {args.runs} jobs one after the other")  # fmt: skip
    for column in ("from the POST to", "min s", "median s", "max s"):
        table.add_column(column, justify="right")
    for i, name in enumerate(("dispatched", "running")):
        values = [s[i] for s in samples]
        table.add_row(
            name, f"{min(values):.3f}", f"{statistics.median(values):.3f}", f"{max(values):.3f}"
        )
    console = Console()
    console.print(table)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
