"""The `local` factory: this machine, with emulated GPUs, for the embedded default."""

from __future__ import annotations

from fabbrica.catalog.model import Catalog, Factory, Partition, System, SystemStatus
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


EMULATED_GPUS = 4  # per emulated factory: enough to show placement, small enough for a laptop


def emulated_federation(catalog: Catalog) -> tuple[Catalog, dict[str, tuple[str, str, int]]]:
    """The catalog with every factory that has an operating partition marked emulated, and
    for each such factory the (partition, GPU model, GPUs) a local executor stands in for."""
    stand_ins: dict[str, tuple[str, str, int]] = {}
    factories = []
    for factory in catalog.factories:
        operating = factory.operating_partitions()
        if operating and not factory.emulated:
            first = operating[0]
            stand_ins[factory.id] = (first.id, first.gpu_model, min(EMULATED_GPUS, first.gpus))
            factory = factory.model_copy(update={"emulated": True})
        factories.append(factory)
    return catalog.model_copy(update={"factories": tuple(factories)}), stand_ins
