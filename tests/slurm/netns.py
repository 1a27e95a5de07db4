"""A network namespace of its own for the central server, joined to the host (the sites'
side) by a veth pair, so a test can look at the sites from where the server stands: which
TCP ports of the sites' side it can reach, and that a notebook's is not among them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCAN = """
import socket, sys
host, found = sys.argv[1], []
for port in range(1, 65536):
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            found.append(port)
print(" ".join(map(str, found)))
"""


@dataclass(frozen=True)
class Namespace:
    name: str
    inside: str  # the server's address in it
    outside: str  # the host's address on the pair: the sites' side, seen from the server

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def reachable_ports(self) -> set[int]:
        """The TCP ports of the sites' side that accept a connection from the server's
        namespace (every port, 1-65535)."""
        done = subprocess.run(
            [*self.prefix, sys.executable, "-c", SCAN, self.outside],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return {int(p) for p in done.stdout.split()}

    def connects(self, host: str, port: int) -> bool:
        """Whether a connection from the server's namespace to host:port is accepted."""
        probe = (
            "import socket, sys\n"
            "with socket.socket() as s:\n"
            "    s.settimeout(2)\n"
            "    sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)\n"
        )
        done = subprocess.run(
            [*self.prefix, sys.executable, "-c", probe, host, str(port)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def server_namespace() -> Iterator[Namespace]:
    """`fabcentral<pid>`: 10.254.<n>.2/30 inside, 10.254.<n>.1/30 on the host's end."""
    tag = os.getpid() % 100000
    n = tag % 250
    ns = Namespace(f"fabcentral{tag}", f"10.254.{n}.2", f"10.254.{n}.1")
    outer, inner = f"fbc{tag}h", f"fbc{tag}n"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("link", "del", outer)
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", ns.name)
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns.name)
        _ip("addr", "add", f"{ns.outside}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        for args in (
            ("addr", "add", f"{ns.inside}/30", "dev", inner),
            ("link", "set", inner, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", ns.name, "ip", *args)
        yield ns
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outer)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", ns.name)


def listening_ports(uid: int) -> set[int]:
    """TCP ports in LISTEN state owned by `uid`, in this (the host's) namespace."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[7]) == uid:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def listening_sockets_of(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its open sockets in LISTEN state)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
