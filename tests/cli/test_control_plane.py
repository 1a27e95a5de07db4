"""The control plane as separate processes on PostgreSQL: `fabbrica serve` replicas and
`fabbrica controller`s; kill -9 the leader or a replica, cut the database away."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from fabbrica.cli.main import main
from fabbrica.client import ApiError, Client, ConnectError
from tests.cli.server import START_PATIENCE, clean_env, free_port, open_for_job_users
from tests.conftest import PostgresServer

pytestmark = pytest.mark.slow
FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
RUN = "echo ran-once; sleep 1"


@dataclass
class Proc:
    """One `fabbrica serve` or `fabbrica controller` process, its output in a log file."""

    args: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fabbrica", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Plane:
    """Replicas and controllers of one deployment, on one database and one data dir."""

    env: dict[str, str]
    home: Path
    procs: list[Proc] = field(default_factory=list)

    def serve(self) -> Proc:
        port = free_port()
        args = ["serve", "--port", str(port), "--data-dir", str(self.home / "data")]
        proc = Proc(args, self.env, self.home / f"serve-{port}.log", port=port)
        self.procs.append(proc)
        return proc.start()

    def controller(self) -> Proc:
        n = len(self.procs)
        args = ["controller", "--data-dir", str(self.home / "data")]
        proc = Proc(args, self.env, self.home / f"controller-{n}.log")
        self.procs.append(proc)
        return proc.start()

    def ready(self, *replicas: Proc) -> None:
        began = time.monotonic()
        for proc in replicas:
            while True:
                assert proc.process is not None and proc.process.poll() is None, proc.output()
                assert time.monotonic() - began < START_PATIENCE, proc.output()
                try:
                    if httpx.get(f"{proc.url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create()
    yield url
    postgres_server.drop(url)


def plane_env(url: str) -> dict[str, str]:
    python_bin = str(Path(sys.executable).parent)
    return clean_env(
        FABBRICA_DATABASE_URL=url,
        FABBRICA_BOOTSTRAP_TOKEN="t",
        FABBRICA_LOCAL_GPUS="8",
        FABBRICA_LOOP_INTERVAL_SECONDS="0.3",
        PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )


@pytest.fixture
def plane(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("plane")
    (home / "data").mkdir()
    open_for_job_users(home / "data")  # as root, local jobs run as users of their own
    deployment = Plane(plane_env(pg_url), home)
    yield deployment
    deployment.stop()


def with_project(url: str) -> str:
    """A user with a Playground allocation on `local`; returns the user's token."""
    with Client(url, "t") as admin:
        token = admin.create_user("eng@startup.it", "Eng")["token"]
    with Client(url, token) as fab:
        org = fab.create_organisation("S", country="IT", type="startup")
        project = fab.create_project("P", org_id=org["id"])["id"]
        accepted = fab.apply(project=project, call="local-playground", gpu_hours=50, months=1,
                             declare_civilian_ai_act=True)  # fmt: skip
        assert accepted["state"] == "accepted"
    return token


class Retrying:
    """A client that tries each replica in turn when one is unreachable or answers 503:
    what a client behind a load balancer sees. Any other error is kept in `errors`."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.clients = [Client(url, token, timeout=10) for url in urls]
        self.errors: list[str] = []
        self.retries = 0

    def __call__(self, call: Callable[[Client], Any]) -> Any:
        for _ in range(100):
            for client in self.clients:
                try:
                    return call(client)
                except ConnectError:
                    self.retries += 1
                except ApiError as exc:
                    if exc.status != 503:
                        self.errors.append(str(exc))
                        raise
                    self.retries += 1
            time.sleep(0.2)
        raise AssertionError("no replica answered")

    def close(self) -> None:
        for client in self.clients:
            client.close()


def submit(fab: Client, n: int) -> int:
    spec = {"name": f"j{n}", "run": RUN, "resources": {"gpus": 1, "time_limit": "5m"}}
    return int(fab.submit(spec, upload=False)["id"])


def leader_of(controllers: list[Proc], term: str = "term 1") -> Proc | None:
    leading = [c for c in controllers if f"leading: this controller runs the control loop ({term}"
               in c.output()]  # fmt: skip
    assert len(leading) <= 1, [c.output() for c in controllers]
    return leading[0] if leading else None


def wait_for(what: Callable[[], Any], seconds: float, why: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {why}")


def charged_once(url: str, job_ids: list[int]) -> None:
    """Every job ended, with exactly one usage record carrying its charge; the allocation
    holds their sum and no reservation (read by SQL)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        query = (
            "SELECT j.id, j.state, j.gpu_hours, count(u.id), sum(u.gpu_hours), j.reason "
            "FROM jobs j LEFT JOIN usage_records u ON u.job_id = j.id GROUP BY j.id"
        )
        jobs = conn.execute(text(query)).all()
        used, reserved = conn.execute(
            text("SELECT sum(used_gpu_hours), sum(reserved_gpu_hours) FROM allocations")
        ).one()
    engine.dispose()
    assert sorted(j[0] for j in jobs) == sorted(job_ids)
    for job_id, state, gpu_hours, records, charged, reason in jobs:
        assert state == "succeeded", (job_id, state, reason)
        assert records == 1 and charged == pytest.approx(gpu_hours), (job_id, records, charged)
    assert used == pytest.approx(sum(j[4] for j in jobs)) and reserved == pytest.approx(0)


def test_kill_9_the_leader_and_a_replica_every_job_runs_and_is_charged_once(
    plane: Plane, pg_url: str, request: pytest.FixtureRequest
) -> None:
    a, b = plane.serve(), plane.serve()
    controllers = [plane.controller(), plane.controller()]
    plane.ready(a, b)
    fab = Retrying([a.url, b.url], with_project(a.url))
    request.addfinalizer(fab.close)
    ids = [fab(partial(submit, n=n)) for n in range(12)]  # 8 GPUs: some wait
    leader = wait_for(lambda: leader_of(controllers), 30, "a controller leads")
    wait_for(lambda: any(j["state"] == "running" for j in fab(lambda c: c.jobs())), 30, "a run")
    leader.kill9()
    killed = time.monotonic()
    ids += [fab(partial(submit, n=n)) for n in range(12, 15)]  # meanwhile
    (other,) = [c for c in controllers if c is not leader]
    wait_for(lambda: leader_of([other]), 10, "the other controller leads")
    took_over = time.monotonic() - killed
    a.kill9()  # the replica clients call first
    ids += [fab(partial(submit, n=n)) for n in range(15, 18)]
    wait_for(lambda: {j["state"] for j in fab(lambda c: c.jobs())} <= FINAL, 60, "all ended")
    assert fab.errors == [] and fab.retries >= 1  # the retries went to the other replica
    for job_id in ids:
        assert fab(methodcaller("logs", job_id)).count("ran-once") == 1, job_id
    charged_once(pg_url, ids)
    assert took_over < 10


class Proxy:
    """A TCP proxy in a thread between the processes and PostgreSQL; `cut()` drops every
    connection and refuses new ones until `mend()`, as a database restart would."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.down = False
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        self.down = True
        with self.lock:
            dropped = list(self.open)
        for sock in dropped:
            self._drop(sock)

    def mend(self) -> None:
        self.down = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def test_the_database_away_answers_503_and_everything_resumes_by_itself(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str
) -> None:
    from sqlalchemy.engine import make_url

    real = make_url(pg_url)
    proxy = Proxy((real.host or "127.0.0.1", real.port or 5432))
    home = tmp_path_factory.mktemp("plane")
    (home / "data").mkdir()
    open_for_job_users(home / "data")
    plane = Plane(plane_env(real.set(port=proxy.port).render_as_string(False)), home)
    try:
        api = plane.serve()
        controller = plane.controller()
        plane.ready(api)
        token = with_project(api.url)
        acked: list[int] = []
        answers: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:  # submissions and listings, all the time
            with Client(api.url, token, timeout=20) as fab:
                while not stop.is_set():
                    try:
                        acked.append(submit(fab, len(acked)))
                        fab.jobs()
                        answers.append(200)
                    except ApiError as exc:  # the status, or what else went wrong
                        answers.append(exc.status if exc.code != "error" else 500)
                    except Exception as exc:
                        answers.append(-1)
                        failures.append(repr(exc))
                    time.sleep(0.05)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_for(lambda: len(acked) >= 3, 30, "submissions before the cut")
        wait_for(lambda: leader_of([controller]), 30, "the controller leads")
        before = len(acked)
        proxy.cut()
        cut_at = len(answers)
        health = httpx.get(f"{api.url}/api/v1/health", timeout=10).json()
        during = httpx.get(f"{api.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                           timeout=10)  # fmt: skip
        wait_for(lambda: 503 in answers[cut_at:], 10, "a 503 under load")
        time.sleep(2)
        proxy.mend()
        wait_for(lambda: len(acked) >= before + 3, 20, "submissions after the database returned")
        stop.set()
        loader.join(30)
        assert health["database"] == "unreachable" and health["status"] == "degraded"
        assert during.status_code == 503 and int(during.headers["Retry-After"]) > 0
        assert during.json()["error"]["code"] == "unavailable"
        assert set(answers) <= {200, 503}, (answers, failures)  # never a 500
        # the controller resumes by itself: every acknowledged job runs, once
        with Client(api.url, token) as fab:
            wait_for(lambda: {j["state"] for j in fab.jobs()} <= FINAL, 30, "all ended")
            assert sorted(j["id"] for j in fab.jobs()) == sorted(acked)
        charged_once(pg_url, acked)
        assert controller.process is not None and controller.process.poll() is None
        assert "term 2" in controller.output()  # it lost the lead with the database, took it back
    finally:
        plane.stop()
        proxy.close()


def test_serve_and_controller_refuse_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FABBRICA_DATABASE_URL", raising=False)
    for command in ("serve", "controller"):
        monkeypatch.setattr(sys, "argv", ["fabbrica", command, "--data-dir", str(tmp_path)])
        with pytest.raises(SystemExit) as exited:
            main()
        said = " ".join(capsys.readouterr().err.split())
        assert exited.value.code == 2, said
        assert "needs PostgreSQL" in said and "fabbrica up" in said
        assert not (tmp_path / "fabbrica.db").exists()


def test_fabbrica_up_on_postgresql_takes_the_leader_lock_as_a_controller_does(
    plane: Plane,
) -> None:
    port = free_port()
    args = ["up", "--port", str(port), "--data-dir", str(plane.home / "data")]
    up = Proc(args, plane.env, plane.home / "up.log", port=port)
    plane.procs.append(up)
    up.start()
    plane.ready(up)

    def loop_of_up() -> str:
        return str(httpx.get(f"{up.url}/api/v1/health", timeout=5).json()["control_loop"])

    wait_for(lambda: loop_of_up() == "running", 30, "fabbrica up leads")
    controller = plane.controller()
    wait_for(lambda: "Fabbrica controller on" in controller.output(), 30, "the controller runs")
    time.sleep(3)  # ten of its tries for the lock
    assert leader_of([controller]) is None, controller.output()  # fabbrica up holds it
    assert loop_of_up() == "running"
    up.kill9()
    wait_for(lambda: leader_of([controller]), 10, "the controller leads once up is gone")
