"""Pre-train a small GPT-2 shaped causal language model (built from a config, no
download) on a text, with checkpoints that survive runs: a resumed run continues from
the last checkpoint's step. Writes the model to outputs/model and registers it.

On several nodes (NODES > 1, one process each, with torchrun's variables) it trains with
DistributedDataParallel: each step every rank takes its own BATCH sequences of one draw
made alike on all ranks (so rank 0's saved generator is every rank's), the gradients are
averaged, and rank 0 alone saves checkpoints, logs the steps and registers the model."""

import os
import sys
import time
from pathlib import Path

import torch
from chartok import CharTokenizer
from training import Checkpoints, agree, device, join, leave, mean, register, sha256_of, wrap
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

ranks = join()  # one process, or this node's rank of the job's process group
where = device(ranks)
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
model = GPT2LMHeadModel(config).to(where)
optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
generator = torch.Generator().manual_seed(int(env("SEED", "0")))
if ranks.main:
    print(f"job {env('FABBRICA_JOB_ID')}: {model.num_parameters():,} parameters", flush=True)

checkpoints = Checkpoints(ranks)  # saved by rank 0 only, loaded by every rank
step = 0
state = checkpoints.load()
if state is not None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    step = int(state["step"])
    if ranks.main:
        print(f"resuming from step {step}", flush=True)
agree(step, ranks)
trained = wrap(model, ranks)


def batch(source: torch.Tensor) -> torch.Tensor:
    drawn = (BATCH * ranks.world_size,)  # alike on every rank; each takes its own part
    starts = torch.randint(0, len(source) - SEQ_LEN - 1, drawn, generator=generator)
    mine = starts[ranks.shard(BATCH)].tolist()
    return torch.stack([source[s : s + SEQ_LEN] for s in mine]).to(where)


def held_out_loss() -> float:
    model.eval()
    with torch.no_grad():
        chunks = held_out[: (len(held_out) // SEQ_LEN) * SEQ_LEN].view(-1, SEQ_LEN)[:32]
        chunks = chunks.to(where)
        loss = float(model(chunks, labels=chunks).loss)
    model.train()
    return loss


model.train()
while step < STEPS:
    inputs = batch(train)
    loss = trained(inputs, labels=inputs).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    step += 1
    if step % LOG_EVERY == 0 or step == STEPS:
        shown = mean(loss, ranks)  # every rank's, averaged
        if ranks.main:
            print(f"step {step} loss {shown:.4f}", flush=True)
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

if not ranks.main:  # rank 0 writes and registers the model
    leave(ranks)
    sys.exit(0)
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
        "nodes": ranks.world_size,
        "held_out_loss": final,
        "data": {"path": str(TEXT), "sha256": sha256_of(TEXT)},
        "job": env("FABBRICA_JOB_ID"),
    },
)
leave(ranks)
sys.exit(0)
