"""A factory's GPUs in a replay: its nodes' free GPUs, its running work, its outages."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from fabbrica.sched import Partition, Running

GPUS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class Hardware:
    """A factory's machines: its GPU model, GPUs per node, and how fast the model runs a
    job against the trace's reference model (an estimate: the trace's run times are
    divided by it). The default is the trace's own machines: 8-GPU nodes of the reference."""

    gpu_model: str = "gpu"
    gpus_per_node: int = GPUS_PER_NODE
    speed: float = 1.0


REFERENCE = Hardware()


class SimulationError(RuntimeError):
    """A conservation check failed: a bug, never a property of the trace."""


class _Part:
    """A partition's GPUs, and (node packing) its nodes' free GPUs."""

    __slots__ = (
        "caps",
        "down",
        "down_nodes",
        "down_share",
        "factory",
        "free",
        "holding",
        "keep_runs",
        "keys",
        "nodes",
        "partial",
        "partition",
        "per",
        "runs",
        "seen",
        "slot",
        "speed",
        "tally",
        "total",
    )

    def __init__(
        self, factory: str, country: str, total: int, hardware: Hardware = REFERENCE,
        *, pack: bool = False,
    ) -> None:  # fmt: skip
        self.factory, self.total, self.free = factory, total, total
        self.down = 0  # GPUs out of service (outages)
        self.per = hardware.gpus_per_node
        self.speed = hardware.speed
        self.partition = Partition(
            factory=factory,
            id="gpu",
            country=country,
            gpu_model=hardware.gpu_model,
            gpus_per_node=hardware.gpus_per_node,
            total_gpus=total,
            free_gpus=total,
            speed=hardware.speed,
        )
        # free GPUs per node (node packing), the last node holding what is left
        self.nodes: list[int] | None = None
        if pack:
            full, rest = divmod(total, self.per)
            self.nodes = [self.per] * full + ([rest] if rest else [])
        self.caps = list(self.nodes or ())  # each node's GPUs (`capacity`)
        self.down_nodes = 0  # nodes out of service, the last ones (a pool's outage)
        self.down_share = 0  # GPUs the outages take (whole nodes go: `down` may be more)
        self.partial = 0  # free GPUs on nodes partly in use (fragmentation)
        self.seen: Partition | None = None  # the last snapshot, while nothing changed
        self.slot = 0  # its index in its queue's partitions
        self.tally = [0]  # `partial` summed over the partitions of a run (shared)
        self.holding: dict[int, tuple[int, ...]] = {}  # job -> its nodes
        self.keys: list[tuple[float, int]] = []  # (expected end, job), sorted
        self.runs: list[Running] = []  # in the same order
        # whether to keep `runs` (for snapshots and outages; not needed when the core
        # keeps its own state between passes)
        self.keep_runs = True

    @property
    def available(self) -> int:
        return max(self.free - self.down, 0)

    def take_down(self, gpus: int) -> None:
        self._out(gpus)

    def bring_up(self, gpus: int) -> None:
        self._out(-gpus)

    def _out(self, change: int) -> None:
        """GPUs out of service change: with nodes, whole nodes (the last ones) go out."""
        self.seen = None
        share = self.down + change if self.nodes is None else self.down_share + change
        if self.nodes is None:
            self.down = share
            return
        self.down_share = share
        count = len(self.nodes)
        if share >= self.total:
            self.down_nodes, self.down = count, self.total
            return
        self.down_nodes = min(math.ceil(share / self.per), count)
        self.down = sum(self.capacity(i) for i in range(count - self.down_nodes, count))

    def snapshot(self) -> Partition:
        if self.seen is not None:
            return self.seen
        self.seen = self._snapshot()
        return self.seen

    def _snapshot(self) -> Partition:
        p = self.partition
        nodes: tuple[int, ...] = ()
        if self.nodes is not None:
            up = len(self.nodes) - self.down_nodes
            nodes = tuple(self.nodes[:up])
        return Partition(
            p.factory, p.id, p.country, p.gpu_model, p.gpus_per_node, p.total_gpus - self.down,
            self.available, running=tuple(self.runs), nodes_free=nodes, speed=p.speed,
        )  # fmt: skip

    def capacity(self, node: int) -> int:
        return min(self.per, self.total - self.per * node)

    def start(self, job: int, gpus: int, expected_end: float, nodes: tuple[int, ...] = ()) -> None:
        if gpus > self.free - self.down:  # `available` (gpus is at least 1)
            raise SimulationError(f"job {job}: {gpus} GPUs started on {self.available} free")
        self.seen = None
        if self.nodes is not None:
            if not nodes:
                raise SimulationError(f"job {job}: started on {self.factory} without nodes")
            if len(nodes) == 1:
                self._set(nodes[0], self.nodes[nodes[0]] - gpus)
                if self.nodes[nodes[0]] < 0:
                    raise SimulationError(f"job {job}: node {nodes[0]} over-full")
            else:
                for node in nodes:
                    if self.nodes[node] != self.caps[node]:
                        raise SimulationError(f"job {job}: node {node} is not free")
                    self.nodes[node] = 0
            self.holding[job] = nodes
        self.free -= gpus
        index = bisect.bisect_left(self.keys, (expected_end, job))
        self.keys.insert(index, (expected_end, job))
        if self.keep_runs:
            self.runs.insert(index, Running(gpus, expected_end, nodes))

    def end(self, job: int, gpus: int, expected_end: float) -> None:
        index = bisect.bisect_left(self.keys, (expected_end, job))
        if index == len(self.keys) or self.keys[index] != (expected_end, job):
            raise SimulationError(f"job {job} ended on {self.factory} where it did not run")
        del self.keys[index]
        if self.keep_runs:
            del self.runs[index]
        self.free += gpus
        self.seen = None
        if self.nodes is not None:
            nodes = self.holding.pop(job)
            if len(nodes) == 1:
                self._set(nodes[0], self.nodes[nodes[0]] + gpus)
            else:
                for node in nodes:
                    self.nodes[node] = self.caps[node]

    def _set(self, node: int, free: int) -> None:
        """A node's free GPUs, keeping `partial` (free GPUs on nodes partly in use)."""
        assert self.nodes is not None
        capacity = self.caps[node]
        old = self.nodes[node]
        change = (free if 0 < free < capacity else 0) - (old if 0 < old < capacity else 0)
        self.partial += change
        self.tally[0] += change
        self.nodes[node] = free
