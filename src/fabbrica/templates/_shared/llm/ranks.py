"""Which process of a multi-node job this is, from the variables torchrun (and Fabbrica's
executors, one process per node) set: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK. Pure (a mapping in, `Ranks` or a `RanksError` naming the variable out): no
PyTorch here, so it is tested without it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")  # a host name, IPv4 or IPv6 address


class RanksError(ValueError):
    """Variables that do not make a process group; `variable` names the first culprit."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Ranks:
    """This process's place: `rank` of `world_size` processes (0 is the main one, which
    alone saves, logs and registers), `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's part of `count` x world_size items drawn alike on every rank."""
        return slice(self.rank * count, (self.rank + 1) * count)


def ranks_from_env(env: Mapping[str, str], nodes: int | None = None) -> Ranks:
    """The ranks the variables give: without WORLD_SIZE (or with 1), a single process;
    otherwise all five must be there and agree. With `nodes` (the template's: one process
    per node), WORLD_SIZE must be it: a job that asked for 2 nodes and got no variables
    would otherwise train twice, each process on its own."""
    if nodes is not None and nodes < 1:
        raise RanksError("NODES", f"{nodes} is not a number of nodes (1 or more)")
    world = _int(env, "WORLD_SIZE", low=1, default=1)
    if nodes is not None and world != nodes:
        raise RanksError(
            "WORLD_SIZE",
            f"{world} processes, but the job asked for {nodes} nodes (one process each);"
            " run it where MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK are set",
        )
    if world == 1:
        return Ranks()
    rank = _int(env, "RANK", low=0)
    if rank >= world:
        raise RanksError("RANK", f"{rank} is not below WORLD_SIZE {world}")
    local = _int(env, "LOCAL_RANK", low=0)
    if local > rank:
        raise RanksError("LOCAL_RANK", f"{local} is more than RANK {rank}")
    addr = env.get("MASTER_ADDR", "").strip()
    if not _HOST.fullmatch(addr):
        raise RanksError("MASTER_ADDR", f"{addr!r} is not a host name or address")
    port = _int(env, "MASTER_PORT", low=1)
    if port > 65535:
        raise RanksError("MASTER_PORT", f"{port} is not a TCP port (1 to 65535)")
    return Ranks(rank, world, local, addr, port)


def backend(cuda: bool) -> str:
    """NCCL between GPUs, gloo on CPUs."""
    return "nccl" if cuda else "gloo"


def _int(env: Mapping[str, str], name: str, *, low: int, default: int | None = None) -> int:
    text = env.get(name, "").strip()
    if not text and default is not None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise RanksError(name, f"{text!r} is not a whole number" if text else "not set")
    value = int(text)
    if value < low:
        raise RanksError(name, f"{value} is less than {low}")
    return value
