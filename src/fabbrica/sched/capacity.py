"""A partition's GPUs during one pass: free now, and when running work releases more."""

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

    def __post_init__(self) -> None:
        partition = self.partition
        self.key = partition.key
        self.billing_factor = partition.billing_factor
        self.whole_node_gpus = partition.gpus_per_node if partition.whole_nodes else 0

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
