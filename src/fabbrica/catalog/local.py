"""The `local` factory: this machine, with emulated GPUs, for the embedded default."""

from __future__ import annotations

from fabbrica.catalog.model import Factory, Partition, System, SystemStatus
from fabbrica.core.billing import PerGpu

LOCAL_ID = "local"


def local_factory(gpus: int, *, gpu_model: str = "emulated", cpus: int = 2) -> Factory:
    partition = Partition(
        id="local",
        gpu_model=gpu_model,
        gpu_name=f"{gpus} emulated GPU(s) on this machine",
        gpus_per_node=gpus,
        nodes=1,
        cpus_per_node=max(cpus, 1),
        memory_per_node_gb=1,
        billing=PerGpu(rule="per_gpu", factor=1.0),
    )
    system = System(
        id="this-machine",
        name="This machine",
        status=SystemStatus.OPERATING,
        partitions=(partition,),
    )
    return Factory(
        id=LOCAL_ID, name="Local (this machine)", country="EU", emulated=True, systems=(system,)
    )
