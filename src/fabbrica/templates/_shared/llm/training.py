"""What both LLM templates share: checkpoints that survive runs, the signal that asks for
one, registering the model (MLflow when MLFLOW_TRACKING_URI is set, else outputs/), and
training on several nodes (torch DistributedDataParallel: one process per node, joined
from the torchrun variables the executor gives each; rank 0 alone saves, logs, registers)."""

import hashlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ranks import Ranks, RanksError, backend, ranks_from_env
from torch.nn.parallel import DistributedDataParallel

CHECKPOINT_DIR = Path(os.environ.get("FABBRICA_CHECKPOINT_DIR", "checkpoints"))
EVERY_S = float(os.environ.get("FABBRICA_CHECKPOINT_EVERY", "600"))
STATE = CHECKPOINT_DIR / "state.pt"


class Checkpoints:
    """Saves every EVERY_S seconds and when SIGUSR1 comes (Fabbrica sends it a grace period
    before the time limit, or before stopping the run to queue it again)."""

    def __init__(self, ranks: Ranks | None = None) -> None:
        self.asked = False
        self.last = time.monotonic()
        self.saves = ranks is None or ranks.main  # the other ranks hold the same state
        signal.signal(signal.SIGUSR1, self._ask)  # on every rank: its default would kill

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def load(self) -> dict[str, Any] | None:
        if not STATE.exists():
            return None
        state: dict[str, Any] = torch.load(STATE, weights_only=True, map_location="cpu")
        return state

    def maybe_save(self, state: dict[str, Any]) -> None:
        due = time.monotonic() - self.last >= EVERY_S
        if not self.saves or not (due or self.asked):
            return
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        tmp = STATE.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, STATE)  # never half a checkpoint
        why = "on the signal" if self.asked else "on schedule"
        print(f"checkpoint saved at step {state['step']} ({why})", flush=True)
        self.asked, self.last = False, time.monotonic()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register(folder: Path, name: str, lineage: dict[str, Any]) -> None:
    """Write the lineage beside the model; log it to MLflow as a new version of `name`
    when MLFLOW_TRACKING_URI is set (Fabbrica's model registry reads the same)."""
    (folder / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"model {name} written to {folder} (lineage.json beside it)", flush=True)
        return
    try:
        import mlflow
    except ImportError:
        print(f"mlflow is not installed: model {name} kept in {folder}", flush=True)
        return
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_artifacts(str(folder), artifact_path="model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    print(f"model {name} registered in MLflow as version {version.version}", flush=True)


# --- several nodes ---------------------------------------------------------------------


def join() -> Ranks:
    """This process's ranks; with WORLD_SIZE > 1, the process group joined (gloo on CPUs,
    NCCL on GPUs) from MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK (env://). NODES is the
    template's node count; variables that do not match it end the job (exit 2)."""
    nodes = os.environ.get("NODES")
    try:
        ranks = ranks_from_env(os.environ, int(nodes) if nodes else None)
    except (RanksError, ValueError) as exc:
        print(f"cannot start on {nodes or 1} node(s): {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    if not ranks.distributed:
        return ranks
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend(cuda), init_method="env://")
    print(
        f"rank {ranks.rank} of {dist.get_world_size()} joined on {socket.gethostname()}"
        f" ({backend(cuda)}, master {ranks.master_addr}:{ranks.master_port})",
        flush=True,
    )
    return ranks


def device(ranks: Ranks) -> torch.device:
    """This process's GPU when there are GPUs, else the CPU."""
    return torch.device(f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu")


def wrap(model: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """The model as trained: DistributedDataParallel across the ranks (its construction
    gives every rank rank 0's weights; each step averages the gradients), else as is."""
    if not ranks.distributed:
        return model
    ids = [ranks.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(model, device_ids=ids)


def agree(step: int, ranks: Ranks) -> None:
    """Every rank resumes from the same checkpoint: their steps must be equal (a rank that
    saw another checkpoint, or none, ends the job)."""
    if not ranks.distributed:
        return
    where = device(ranks)  # NCCL gathers on the GPU
    steps = [torch.zeros(1, dtype=torch.long, device=where) for _ in range(ranks.world_size)]
    dist.all_gather(steps, torch.tensor([step], dtype=torch.long, device=where))
    found = [int(s.item()) for s in steps]
    if len(set(found)) != 1:
        sys.exit(f"the ranks start from different checkpoints (steps {found}): not shared?")


def mean(value: torch.Tensor, ranks: Ranks) -> float:
    """The ranks' mean of a scalar (each rank must call it at the same step)."""
    if not ranks.distributed:
        return float(value.item())
    total = value.detach().float().reshape(1).clone()
    dist.all_reduce(total)
    return float(total.item()) / ranks.world_size


def leave(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.destroy_process_group()
