"""Run `fabbrica up` and the `fabbrica` CLI as real processes, the way a user does."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# A bound on start-up that catches a hang, not a measure of speed (a fresh start takes about
# 3 s on an idle machine; the suite runs on both cores, so a loaded start may take 20 s).
STARTUP_LIMIT = 45.0
# How long start() waits: longer, so that a loaded machine (tests in parallel) does not fail
# the tests that only need a server.
START_PATIENCE = 90.0


PORT_ATTEMPTS = 3


class PortTaken(RuntimeError):
    """Another process bound the port first."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    # pytest-xdist workers set COLUMNS=80: the CLI would take it for a terminal's width
    dropped = {"COLUMNS", "LINES"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_") and k not in dropped
    }
    env.update(extra)
    return env


def fabbrica(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabbrica", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def open_for_job_users(data_dir: Path) -> None:
    """As root, local jobs run as unprivileged users (docs/local-isolation.md) who find this
    Python first on their PATH and run in the data directory: let them traverse the
    directories on the way to both, as the start message of `fabbrica up` says to (here
    `chmod o+x /root` and pytest's own /tmp/pytest-of-root)."""
    from fabbrica.backends.isolation import closed_dirs

    if os.geteuid() != 0:
        return
    python = [Path(sys.executable).parent, Path(sys.executable).resolve()]
    for folder in closed_dirs([*python, data_dir]):
        os.chmod(folder, os.stat(folder).st_mode | 0o001)


@dataclass
class Server:
    data_dir: Path
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    user: str | None = None  # the OS user `fabbrica up` runs as (None: this process's)
    host: str = "127.0.0.1"  # the address it listens on
    prefix: tuple[str, ...] = ()  # runs `fabbrica up` through it (`ip netns exec NS`)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *extra: str) -> Server:
        """Start `fabbrica up`; on another free port when a parallel test took this one
        between free_port() and the bind."""
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return self._start(extra)
            except PortTaken:
                self.port = free_port()
        return self._start(extra)

    def _start(self, extra: tuple[str, ...]) -> Server:
        if self.user is None:  # as root, its local jobs run as users of their own
            open_for_job_users(self.data_dir)
        args = ["up", "--port", str(self.port), "--data-dir", str(self.data_dir), *extra]
        if self.host != "127.0.0.1":
            args += ["--host", self.host]
        began = time.monotonic()
        entry = pwd.getpwnam(self.user) if self.user else None
        logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "fabbrica", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=entry.pw_uid if entry else None,
                group=entry.pw_gid if entry else None,
                extra_groups=[] if entry else None,
            )
        while time.monotonic() - began < START_PATIENCE:
            if self.process.poll() is not None:
                said = self.log.read_bytes()[logged:].decode(errors="replace")
                if "address already in use" in said.lower():
                    self.process = None
                    raise PortTaken(said)
                raise RuntimeError(
                    f"fabbrica up exited {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    self.started_in = time.monotonic() - began
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fabbrica up did not answer in time:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client_env(self, token: str) -> dict[str, str]:
        return clean_env(FABBRICA_URL=self.url, FABBRICA_TOKEN=token)
