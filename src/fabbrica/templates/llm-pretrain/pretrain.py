"""Pre-train a small GPT-2 shaped causal language model (built from a config, no
download) on a text, with checkpoints that survive runs: a resumed run continues from
the last checkpoint's step. Writes the model to outputs/model and registers it."""

import os
import sys
import time
from pathlib import Path

import torch
from chartok import CharTokenizer
from training import Checkpoints, register, sha256_of
from transformers import GPT2Config, GPT2LMHeadModel

env = os.environ.get
STEPS = int(env("STEPS", "300"))
BATCH = int(env("BATCH", "16"))
SEQ_LEN = int(env("SEQ_LEN", "128"))
LR = float(env("LR", "0.002"))
STEP_DELAY = float(env("STEP_DELAY", "0"))  # seconds added to each step (demonstrations)
TEXT = Path(env("TEXT") or "data/genesis.txt")
NAME = env("MODEL_NAME", "llm-pretrain")
LOG_EVERY = max(1, STEPS // 20)

torch.manual_seed(int(env("SEED", "0")))
text = TEXT.read_text(encoding="utf-8")
tokenizer = CharTokenizer.from_text(text)
data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
cut = int(len(data) * 0.95)
train, held_out = data[:cut], data[cut:]
config = GPT2Config(
    vocab_size=len(tokenizer),
    n_positions=SEQ_LEN,
    n_embd=int(env("N_EMBD", "192")),
    n_layer=int(env("N_LAYER", "6")),
    n_head=int(env("N_HEAD", "6")),
    bos_token_id=0,
    eos_token_id=0,
)
model = GPT2LMHeadModel(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
generator = torch.Generator().manual_seed(int(env("SEED", "0")))
print(f"job {env('FABBRICA_JOB_ID')}: {model.num_parameters():,} parameters", flush=True)

checkpoints = Checkpoints()
step = 0
state = checkpoints.load()
if state is not None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    step = int(state["step"])
    print(f"resuming from step {step}", flush=True)


def batch(source: torch.Tensor) -> torch.Tensor:
    starts = torch.randint(0, len(source) - SEQ_LEN - 1, (BATCH,), generator=generator)
    return torch.stack([source[s : s + SEQ_LEN] for s in starts.tolist()])


def held_out_loss() -> float:
    model.eval()
    with torch.no_grad():
        chunks = held_out[: (len(held_out) // SEQ_LEN) * SEQ_LEN].view(-1, SEQ_LEN)[:32]
        loss = float(model(chunks, labels=chunks).loss)
    model.train()
    return loss


model.train()
while step < STEPS:
    inputs = batch(train)
    loss = model(inputs, labels=inputs).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    step += 1
    if step % LOG_EVERY == 0 or step == STEPS:
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    if STEP_DELAY:
        time.sleep(STEP_DELAY)
    checkpoints.maybe_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "step": step,
        }
    )

final = held_out_loss()
print(f"held-out loss {final:.4f}", flush=True)
folder = Path("outputs/model")
folder.mkdir(parents=True, exist_ok=True)
model.save_pretrained(folder)
tokenizer.save(folder)
register(
    folder,
    NAME,
    {
        "model": NAME,
        "kind": "causal-lm (GPT-2 shaped, character tokens)",
        "parameters": model.num_parameters(),
        "steps": step,
        "held_out_loss": final,
        "data": {"path": str(TEXT), "sha256": sha256_of(TEXT)},
        "job": env("FABBRICA_JOB_ID"),
    },
)
sys.exit(0)
