"""A frozen copy of `fabbrica.sched.capacity` before its node and release-time paths were made
faster (2026-12-01): what `test_sched_nodes_equivalence.py` compares the live one with."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from fabbrica.sched.model import Job, Partition, Seconds


@dataclass
class PartitionState:
    """Free GPUs and the release times of running work. The release times are sorted only
    when a reservation or an estimate needs them: most passes never look."""

    partition: Partition
    free: int
    _ends: list[Seconds] | None = None  # sorted release times, once needed
    _gpus: list[int] = field(default_factory=list)  # GPUs released at _ends[i]
    _started: list[tuple[Seconds, int]] = field(default_factory=list)  # before sorting
    _prefix: list[int] | None = None
    # need -> the release time at which `need` GPUs are free (None: never), for needs above
    # `free`; emptied when work starts. Most of a long queue asks the same few sizes.
    _when: dict[int, Seconds | None] = field(default_factory=dict)
    # the partition's (factory, id) and billing, read by every placement
    key: tuple[str, str] = field(init=False)
    billing_factor: float = field(init=False)
    whole_node_gpus: int = field(init=False)  # GPUs per node under whole_node billing, or 0
    speed: float = field(init=False)
    # free GPUs per node when the partition's nodes are tracked (`Partition.nodes_free`)
    nodes: list[int] | None = field(init=False)
    # the most free GPUs on one node, and the GPUs of the wholly free nodes: what decides
    # whether a job fits now (None: to count again, after work started)
    _most: int | None = None
    _whole: int | None = None
    # work started in this pass on tracked nodes: (expected end, its nodes, GPUs held)
    _placed: list[tuple[Seconds, tuple[int, ...], int]] = field(default_factory=list)
    _packed_when: dict[int, Seconds | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        partition = self.partition
        self.key = partition.key
        self.billing_factor = partition.billing_factor
        self.whole_node_gpus = partition.gpus_per_node if partition.whole_nodes else 0
        self.speed = partition.speed
        self.nodes = list(partition.nodes_free) if partition.nodes_free else None

    # --- nodes (tracked only when the snapshot gives them) ------------------------------

    def capacity(self, node: int) -> int:
        """GPUs of a node: `gpus_per_node`, but the last, which has what is left."""
        per = self.partition.gpus_per_node
        return min(per, self.partition.total_gpus - per * node)

    def fits(self, gpus: int) -> bool:
        """Whether the job can start now: free GPUs, and (tracked nodes) a node with room
        for it, or enough whole free nodes for it (what `pack` would find)."""
        if gpus > self.free:
            return False
        nodes = self.nodes
        if nodes is None:
            return True
        if self._most is None or self._whole is None:
            self._most = max(nodes, default=0)
            self._whole = sum(f for i, f in enumerate(nodes) if f and f == self.capacity(i))
        if gpus <= self.partition.gpus_per_node:
            return gpus <= self._most
        return gpus <= self._whole

    def pack(self, gpus: int) -> tuple[int, ...] | None:
        """The nodes a job would take now: the fullest node with room for a job of at most
        one node's GPUs (best fit, then the lowest index); for a larger job, whole free
        nodes, the largest first, until they hold its GPUs. None: it does not fit."""
        nodes = self.nodes
        assert nodes is not None
        per = self.partition.gpus_per_node
        if gpus <= per:
            best, room = -1, per + 1
            for i, free in enumerate(nodes):
                if gpus <= free < room:
                    best, room = i, free
                    if free == gpus:
                        break
            return None if best < 0 else (best,)
        taken: list[int] = []
        short = -1
        total = 0
        for i, free in enumerate(nodes):
            capacity = self.capacity(i)
            if free != capacity:
                continue
            if capacity < per:
                short = i  # the short last node, used only if the full ones do not do
                continue
            taken.append(i)
            total += capacity
            if total >= gpus:
                return tuple(taken)
        if short >= 0 and total + nodes[short] >= gpus:
            return (*taken, short)
        return None

    def held(self, gpus: int, nodes: tuple[int, ...]) -> int:
        """GPUs a job holds on `nodes`: its own within one node, whole nodes above."""
        if len(nodes) == 1 and gpus <= self.partition.gpus_per_node:
            return gpus
        return sum(self.capacity(i) for i in nodes)

    def need(self, gpus: int) -> int:
        """GPUs that must be free for the job (whole nodes above one node's GPUs), as
        estimates count them: free GPUs, not where they are."""
        per = self.partition.gpus_per_node
        if self.nodes is None or gpus <= per:
            return gpus
        return min(math.ceil(gpus / per) * per, self.partition.total_gpus)

    def take(self, gpus: int, end: Seconds) -> tuple[tuple[int, ...], int]:
        """Start a job on tracked nodes: (its nodes, the GPUs it holds)."""
        nodes = self.nodes
        found = self.pack(gpus)
        if nodes is None or found is None:
            raise ValueError(f"{gpus} GPUs do not fit on the free nodes")
        held = self.held(gpus, found)
        self._most = self._whole = None
        self._placed.append((end, found, held))
        if self._packed_when:
            self._packed_when = {}
        if len(found) == 1 and gpus <= self.partition.gpus_per_node:
            nodes[found[0]] -= gpus
        else:
            for i in found:
                nodes[i] = 0
        self.start(held, end)
        return found, held

    @classmethod
    def of(cls, partition: Partition) -> PartitionState:
        return cls(partition, partition.free_gpus)

    def start(self, gpus: int, end: Seconds) -> None:
        if gpus > self.free:
            raise ValueError(f"{gpus} GPUs do not fit in {self.free} free")
        self.free -= gpus
        if self._when:
            self._when = {}
        if self._ends is None:
            self._started.append((end, gpus))
            return
        index = bisect.bisect_right(self._ends, end)
        self._ends.insert(index, end)
        self._gpus.insert(index, gpus)
        self._prefix = None

    def earliest_packed(self, gpus: int, now: Seconds) -> Seconds | None:
        """When the job fits on the tracked nodes at the earliest (a node with room for
        it, or enough whole free nodes), if running work ends on time where it runs."""
        if self.fits(gpus):
            return now
        if gpus in self._packed_when:
            when = self._packed_when[gpus]
        else:
            when = self._packed(gpus)
            self._packed_when[gpus] = when
        if when is None:
            return None
        return now if now > when else when

    def _packed(self, gpus: int) -> Seconds | None:
        assert self.nodes is not None
        per = self.partition.gpus_per_node
        nodes = list(self.nodes)
        count = len(nodes)
        capacity = [self.capacity(i) for i in range(count)]
        whole = sum(c for f, c in zip(nodes, capacity, strict=True) if f == c and c)
        releases = sorted(
            [(r.expected_end, r.nodes, r.gpus) for r in self.partition.running if r.nodes]
            + self._placed
        )
        for end, where, held in releases:
            if len(where) == 1 and held <= per:
                node = where[0]
                if node >= count:
                    continue
                nodes[node] += held
                if nodes[node] == capacity[node]:
                    whole += capacity[node]
                if gpus <= per and gpus <= nodes[node]:
                    return end
            else:
                for node in where:
                    if node < count and nodes[node] != capacity[node]:
                        nodes[node] = capacity[node]
                        whole += capacity[node]
                if gpus <= per and any(gpus <= nodes[n] for n in where if n < count):
                    return end
            if gpus > per and gpus <= whole:
                return end
        return None

    def earliest(self, need: int, now: Seconds) -> Seconds | None:
        """When `need` GPUs are free at the earliest, if running work ends on time."""
        if need <= self.free:
            return now
        if need in self._when:
            when = self._when[need]
        else:
            ends, prefix = self._sorted(), self._released()
            index = bisect.bisect_left(prefix, need - self.free)
            when = None if index == len(prefix) else ends[index]
            self._when[need] = when
        if when is None:
            return None
        return now if now > when else when  # max(when, now)

    def free_at(self, when: Seconds) -> int:
        """GPUs free at `when` (after what ends by then is released)."""
        ends, prefix = self._sorted(), self._released()
        index = bisect.bisect_right(ends, when)
        return self.free + (prefix[index - 1] if index else 0)

    def _sorted(self) -> list[Seconds]:
        if self._ends is None:
            pairs = sorted(
                [(r.expected_end, r.gpus) for r in self.partition.running] + self._started
            )
            self._ends = [end for end, _ in pairs]
            self._gpus = [gpus for _, gpus in pairs]
            self._started = []
        return self._ends

    def _released(self) -> list[int]:
        if self._prefix is None:
            self._sorted()
            total, prefix = 0, []
            for gpus in self._gpus:
                total += gpus
                prefix.append(total)
            self._prefix = prefix
        return self._prefix

    @property
    def load(self) -> float:
        total = self.partition.total_gpus
        return 1.0 - self.free / total if total else 1.0


def charge(partition: Partition, job: Job) -> float:
    """Worst-case charged GPU-hours: the time limit under the partition's billing."""
    gpus = job.gpus
    if partition.whole_nodes:
        per = partition.gpus_per_node
        gpus = math.ceil(gpus / per) * per
    return gpus * partition.billing_factor * job.time_limit / 3600.0
