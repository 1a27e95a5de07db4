"""Issue 10, finding 1 over real HTTP: a `fabbrica up` process, a 10-level alias bomb
(9**10 strings if expanded) refused with 422 at once, and /health answering quickly while
20 clients keep sending it. And what a crash leaves in the uploads folder is swept at start."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.server import Server
from tests.unit.test_safe_yaml import alias_bomb

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer t"}
CLIENTS = 20


def test_alias_bombs_are_quick_422s_and_health_stays_fast_meanwhile(server: Server) -> None:
    server.start()
    url = f"{server.url}/api/v1"
    body = {"spec": alias_bomb(10)}
    with httpx.Client(timeout=30) as client:
        alone = []
        for _ in range(10):
            began = time.perf_counter()
            r = client.post(f"{url}/jobs", headers=ADMIN, json=body)
            alone.append(time.perf_counter() - began)
            assert r.status_code == 422, r.text
            assert r.json()["error"]["field"] == "spec.env.a0"

    stop = threading.Event()
    sent: list[float] = []
    failures: list[str] = []

    def bomber() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                began = time.perf_counter()
                r = client.post(f"{url}/jobs", headers=ADMIN, json=body)
                sent.append(time.perf_counter() - began)
                if r.status_code != 422:
                    failures.append(r.text)

    threads = [threading.Thread(target=bomber) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    health: list[float] = []
    try:
        deadline = time.monotonic() + 10
        while len(sent) < CLIENTS and time.monotonic() < deadline:
            time.sleep(0.01)  # every client has had a bomb answered: all 20 are in flight
        with httpx.Client(timeout=30) as client:
            for _ in range(50):
                began = time.perf_counter()
                assert client.get(f"{url}/health").status_code == 200
                health.append(time.perf_counter() - began)
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    numbers = (
        f"bomb alone: median {statistics.median(alone) * 1000:.1f} ms, "
        f"max {max(alone) * 1000:.1f} ms; under {CLIENTS} bombing clients "
        f"({len(sent)} bombs, median {statistics.median(sent) * 1000:.1f} ms): /health "
        f"median {statistics.median(health) * 1000:.1f} ms, "
        f"p90 {statistics.quantiles(health, n=10)[-1] * 1000:.1f} ms, "
        f"max {max(health) * 1000:.1f} ms"
    )
    print(numbers)
    assert not failures, failures[:3]
    # Bounds a frozen server cannot meet (before the fix: /health 25 s behind one bomb of 8
    # levels) and a machine busy with other tests always does; the figures themselves are
    # printed, and measured quietly in bench/, not asserted here.
    assert statistics.median(alone) < 1.0, numbers
    assert statistics.median(health) < 1.0, numbers
    assert statistics.quantiles(health, n=10)[-1] < 1.0, numbers  # no probe starves either


def test_a_crashed_submission_leaves_nothing_after_a_restart(server: Server) -> None:
    uploads = server.data_dir / "uploads"
    (uploads / ".partial").mkdir(parents=True)
    partial = uploads / ".partial" / "0badc0de.tar"
    partial.write_bytes(b"the first half of an up")  # the process died while writing
    orphan = uploads / "5eed.tar"
    orphan.write_bytes(b"complete, but its job was never committed")
    server.start()
    assert not partial.exists() and not orphan.exists()
    assert "removed 2 abandoned upload(s)" in server.output()
    assert sorted(p for p in uploads.rglob("*") if not p.is_dir()) == list[Path]()
