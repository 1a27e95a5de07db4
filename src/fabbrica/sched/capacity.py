"""A partition's GPUs during one pass: free now, and when running work releases more."""

from __future__ import annotations

import bisect
import math
from itertools import islice
from operator import attrgetter, itemgetter, le

from fabbrica.sched.model import Job, Partition, Seconds


class PartitionState:
    """Free GPUs and the release times of running work. The release times are sorted only
    when a reservation or an estimate needs them: most passes never look. A plain class
    with slots: a pass builds one per partition, and the simulator runs passes by the
    hundred thousand."""

    __slots__ = (
        "_ends",
        "_gpus",
        "_most",
        "_packed_when",
        "_placed",
        "_prefix",
        "_started",
        "_when",
        "_whole",
        "billing_factor",
        "free",
        "key",
        "nodes",
        "partition",
        "speed",
        "whole_node_gpus",
    )

    def __init__(self, partition: Partition, free: int) -> None:
        self.partition = partition
        self.free = free
        self._ends: list[Seconds] | None = None  # sorted release times, once needed
        self._gpus: list[int] = []  # GPUs released at _ends[i]
        self._started: list[tuple[Seconds, int]] = []  # before sorting
        self._prefix: list[int] | None = None
        # need -> the release time at which `need` GPUs are free (None: never), for needs
        # above `free`; emptied when work starts. Most of a long queue asks few sizes.
        self._when: dict[int, Seconds | None] = {}
        # the partition's (factory, id) and billing, read by every placement
        self.key = (partition.factory, partition.id)
        self.billing_factor = partition.billing_factor
        # GPUs per node under whole_node billing, or 0
        self.whole_node_gpus = partition.gpus_per_node if partition.whole_nodes else 0
        self.speed = partition.speed
        # free GPUs per node when the partition's nodes are tracked (`nodes_free`)
        self.nodes: list[int] | None = list(partition.nodes_free) if partition.nodes_free else None
        # the most free GPUs on one node, and the GPUs of the wholly free nodes: what
        # decides whether a job fits now (None: to count again, after work started)
        self._most: int | None = None
        self._whole: int | None = None
        # work started in this pass on tracked nodes: (expected end, its nodes, GPUs held),
        # sorted
        self._placed: list[tuple[Seconds, tuple[int, ...], int]] = []
        self._packed_when: dict[int, Seconds | None] = {}

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
        # each count only when a job needs it (most jobs take one node: the most free)
        if gpus <= self.partition.gpus_per_node:
            if self._most is None:
                self._most = max(nodes, default=0)
            return gpus <= self._most
        if self._whole is None:
            self._whole = self._whole_free(nodes)
        return gpus <= self._whole

    def _capacities(self, count: int) -> list[int]:
        """`capacity` of the first `count` nodes."""
        per, total = self.partition.gpus_per_node, self.partition.total_gpus
        if per <= 0:
            return [self.capacity(i) for i in range(count)]
        full = min(total // per, count)
        return [per] * full + [total - per * i for i in range(max(full, 0), count)]

    def _whole_free(self, nodes: list[int]) -> int:
        """GPUs of the wholly free nodes: those with all of their `capacity` free."""
        per, total = self.partition.gpus_per_node, self.partition.total_gpus
        if per <= 0:
            return sum(f for i, f in enumerate(nodes) if f and f == self.capacity(i))
        # nodes below `full` have `per` GPUs; node `full` has what is left (maybe none);
        # any further node has none (a capacity of 0 or less is never wholly free)
        full = total // per
        whole = nodes[:full].count(per) * per
        rest = total - per * full
        if rest and len(nodes) > full and nodes[full] == rest:
            whole += rest
        return whole

    def pack(self, gpus: int) -> tuple[int, ...] | None:
        """The nodes a job would take now: the fullest node with room for a job of at most
        one node's GPUs (best fit, then the lowest index); for a larger job, whole free
        nodes, the largest first, until they hold its GPUs. None: it does not fit."""
        nodes = self.nodes
        assert nodes is not None
        per = self.partition.gpus_per_node
        if gpus <= per:
            # the least room that holds it, on the first node with that room (no node
            # has more than `per` free); each look is one scan in C
            for room in range(max(gpus, 0), per + 1):
                if room in nodes:
                    return (nodes.index(room),)
            return None
        # whole free nodes: those below `full` have `per` GPUs, node `full` what is left
        # (the short last node, used only if the full ones do not do); beyond, none
        if per <= 0:
            return None  # nodes of no GPUs never hold it
        full = self.partition.total_gpus // per
        taken: list[int] = []
        total = 0
        at = 0
        while True:
            try:
                at = nodes.index(per, at, full)
            except ValueError:
                break
            taken.append(at)
            at += 1
            total += per
            if total >= gpus:
                return tuple(taken)
        rest = self.partition.total_gpus - per * full
        if rest and len(nodes) > full and nodes[full] == rest and total + rest >= gpus:
            return (*taken, full)
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
        bisect.insort(self._placed, (end, found, held))  # in order: `release` finds it
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

    def release(self, gpus: int, end: Seconds, nodes: tuple[int, ...] = ()) -> None:
        """Work started on this state ends (a state kept between passes, `Scheduler`):
        `gpus` held until `end` on `nodes`, as `start` or `take` recorded it."""
        self.free += gpus
        if self._when:
            self._when = {}
        if self.nodes is not None:
            self._most = self._whole = None
            if self._packed_when:
                self._packed_when = {}
            placed = self._placed
            at = bisect.bisect_left(placed, (end, nodes, gpus))
            if at == len(placed) or placed[at] != (end, nodes, gpus):
                raise ValueError(f"no work of {gpus} GPUs on nodes {nodes} ends at {end}")
            del placed[at]
            if len(nodes) == 1 and gpus <= self.partition.gpus_per_node:
                self.nodes[nodes[0]] += gpus
            else:
                for i in nodes:
                    self.nodes[i] = self.capacity(i)
        # any of the equal release times: the answers look at whole runs of them
        ends, held = self._sorted(), self._gpus
        index = bisect.bisect_left(ends, end)
        while index < len(ends) and ends[index] == end and held[index] != gpus:
            index += 1
        if index == len(ends) or ends[index] != end:
            raise ValueError(f"no work of {gpus} GPUs ends at {end}")
        del ends[index]
        del held[index]
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
        capacity = self._capacities(count)
        whole = sum(c for f, c in zip(nodes, capacity, strict=True) if f == c and c)
        # by release time; work released at the same time may come in any order: the answer
        # is a release time, reached at the end of the same run of equal times either way
        releases = [(r.expected_end, r.nodes, r.gpus) for r in self.partition.running if r.nodes]
        releases += self._placed
        releases.sort(key=_FIRST)
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
            running = self.partition.running
            ends = list(map(_END, running))
            if all(map(le, ends, islice(ends, 1, None))):
                # already in order (the simulator keeps its runs so): no sort; work
                # ending at the same time may come in another order, which changes no
                # answer (`earliest` and `free_at` look at whole runs of equal ends)
                self._ends, self._gpus = ends, list(map(_GPUS, running))
                for end, gpus in self._started:
                    index = bisect.bisect_right(ends, end)
                    ends.insert(index, end)
                    self._gpus.insert(index, gpus)
            else:
                pairs = sorted([(r.expected_end, r.gpus) for r in running] + self._started)
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
    if partition.whole_nodes:  # core.billing.whole_node_gpus: every node it runs on, whole
        per = partition.gpus_per_node
        gpus = max(job.nodes if gpus else 0, math.ceil(gpus / per)) * per
    return gpus * partition.billing_factor * job.time_limit / 3600.0


_END, _GPUS = attrgetter("expected_end"), attrgetter("gpus")
_FIRST = itemgetter(0)
