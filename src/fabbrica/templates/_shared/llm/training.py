"""What both LLM templates share: checkpoints that survive runs, the signal that asks for
one, and registering the model (MLflow when MLFLOW_TRACKING_URI is set, else outputs/)."""

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = Path(os.environ.get("FABBRICA_CHECKPOINT_DIR", "checkpoints"))
EVERY_S = float(os.environ.get("FABBRICA_CHECKPOINT_EVERY", "600"))
STATE = CHECKPOINT_DIR / "state.pt"


class Checkpoints:
    """Saves every EVERY_S seconds and when SIGUSR1 comes (Fabbrica sends it a grace period
    before the time limit, or before stopping the run to queue it again)."""

    def __init__(self) -> None:
        self.asked = False
        self.last = time.monotonic()
        signal.signal(signal.SIGUSR1, self._ask)

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def load(self) -> dict[str, Any] | None:
        if not STATE.exists():
            return None
        state: dict[str, Any] = torch.load(STATE, weights_only=True)
        return state

    def maybe_save(self, state: dict[str, Any]) -> None:
        due = time.monotonic() - self.last >= EVERY_S
        if not (due or self.asked):
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
