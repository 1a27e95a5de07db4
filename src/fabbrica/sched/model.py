"""The scheduler's inputs and outputs: frozen plain values."""

from __future__ import annotations

from dataclasses import dataclass, field

Seconds = float  # times are seconds on one clock the caller chooses (epoch, or sim time)


@dataclass(frozen=True, slots=True)
class Running:
    """Work holding GPUs on a partition until `expected_end` (its start + time limit)."""

    gpus: int
    expected_end: Seconds
    nodes: tuple[int, ...] = ()  # where it runs, when the partition's nodes are tracked


@dataclass(frozen=True, slots=True)
class Partition:
    factory: str
    id: str
    country: str
    gpu_model: str
    gpus_per_node: int
    total_gpus: int
    free_gpus: int
    billing_factor: float = 1.0  # charged GPU-hours per GPU-hour (per_gpu billing)
    whole_nodes: bool = False  # whole_node billing: partly used nodes are charged in full
    multi_node: bool = True  # the backend can run jobs across nodes
    running: tuple[Running, ...] = ()
    # Free GPUs on each node, when the caller tracks nodes (the simulator): a job of at most
    # `gpus_per_node` GPUs is packed into one node (the fullest that fits), a larger job
    # takes whole free nodes; every node has `gpus_per_node` GPUs but the last, which has
    # what is left of `total_gpus`. Empty (production): GPUs are counted, not packed.
    nodes_free: tuple[int, ...] = ()
    # how fast its GPU model runs a job against the reference model of the jobs' time limits
    # (an estimate); a job's expected end there is its time limit / speed
    speed: float = 1.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.factory, self.id)


@dataclass(frozen=True, slots=True)
class Allocation:
    """GPU-hours a project may still charge at a factory (optionally one GPU model)."""

    id: int
    project: str
    factory: str
    remaining_gpu_hours: float
    gpu_model: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    project: str
    gpus: int
    time_limit: Seconds
    submitted_at: Seconds
    nodes: int = 1
    gpu_model: str | None = None  # None: any
    factories: frozenset[str] | None = None  # allow-list; None: any
    countries: frozenset[str] | None = None  # data residency; None: any
    home_country: str | None = None  # the organisation's country: preferred on ties
    # what limits `countries` when the job's data does (the data sets and their residency),
    # named in the reasons a job waits or is refused
    residency: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    fairshare_weight: float = 1000.0
    age_weight: float = 100.0
    age_saturation: Seconds = 7 * 86400.0  # age counts fully after a week
    backfill: bool = True
    # EASY backfill's reservations: "partition" (each partition protects the highest-priority
    # job that cannot start and whose earliest start is there, as each site's Slurm does) or
    # "federation" (one reservation for the whole pass).
    reservations: str = "partition"
    # Reasons and estimated starts for waiting jobs. The simulator turns them off: it needs
    # only the starts, and a pass then skips jobs that cannot start in what is free.
    explain: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: Seconds
    jobs: tuple[Job, ...]
    partitions: tuple[Partition, ...]
    allocations: tuple[Allocation, ...]
    shares: dict[str, float] = field(default_factory=dict)  # project -> share (default 1)
    usage: dict[str, float] = field(default_factory=dict)  # project -> decayed GPU-hours
    policy: Policy = Policy()


@dataclass(frozen=True, slots=True)
class Assignment:
    job: str
    factory: str
    partition: str
    allocation: int
    charge_gpu_hours: float  # worst case: the time limit under the billing rule
    start: Seconds
    backfilled: bool = False
    # the nodes (indexes into `Partition.nodes_free`) it was packed on; empty when the
    # partition's nodes are not tracked
    nodes: tuple[int, ...] = ()
    gpus_held: int = 0  # tracked nodes: the GPUs it holds (whole nodes' above one node); else 0


@dataclass(frozen=True, slots=True)
class Reservation:
    job: str
    factory: str
    partition: str
    start: Seconds
    gpus: int


@dataclass(frozen=True, slots=True)
class Waiting:
    job: str
    reason: str
    estimated_start: Seconds | None = None
    factory: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    assignments: tuple[Assignment, ...]
    waiting: tuple[Waiting, ...]  # empty when the policy does not explain
    reservation: Reservation | None  # the highest-priority job's (the first of reservations)
    order: tuple[str, ...]  # job ids by priority, highest first
    reservations: tuple[Reservation, ...] = ()  # at most one per partition, by priority
