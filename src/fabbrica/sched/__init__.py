"""The scheduling core: a snapshot in, decisions out. Pure: no I/O, no clock reads.

The same code places jobs in production (the control loop) and in the simulator.
"""

from fabbrica.sched.model import (
    Allocation,
    Assignment,
    Decision,
    Job,
    Partition,
    Policy,
    Reservation,
    Running,
    Snapshot,
    Waiting,
)
from fabbrica.sched.placement import schedule
from fabbrica.sched.scheduler import Scheduler

__all__ = [
    "Allocation",
    "Assignment",
    "Decision",
    "Job",
    "Partition",
    "Policy",
    "Reservation",
    "Running",
    "Scheduler",
    "Snapshot",
    "Waiting",
    "schedule",
]
