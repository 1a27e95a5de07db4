"""LoRA fine-tuning (PEFT) of a base model saved by llm-pretrain on an instruction data
set, with checkpoints that survive runs. Writes the adapter to outputs/adapter (it loads
with `PeftModel.from_pretrained(base, "outputs/adapter")`), prints the held-out loss of the
base model and of the fine-tuned one, and registers the adapter with its lineage.

On several nodes (NODES > 1, one process each, with torchrun's variables) it trains with
DistributedDataParallel as pretrain.py does: each rank its own part of one draw made alike
on all ranks; rank 0 alone saves checkpoints, logs, writes and registers the adapter."""

import json
import os
import sys
import time
from pathlib import Path

import torch
from chartok import CharTokenizer
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from training import Checkpoints, agree, device, join, leave, mean, register, sha256_of, wrap
from transformers import GPT2LMHeadModel

env = os.environ.get
BASE = Path((env("BASE") or "base").split("@")[0])  # a data set: name or name@version
if not (BASE / "config.json").exists() and env("FABBRICA_DATA"):
    BASE = Path(env("FABBRICA_DATA", "")) / BASE  # a data set the job reads
DATA = Path(env("DATA") or "data/instructions.jsonl")
STEPS = int(env("STEPS", "100"))
BATCH = int(env("BATCH", "8"))
LR = float(env("LR", "0.003"))
RANK = int(env("LORA_RANK", "8"))
STEP_DELAY = float(env("STEP_DELAY", "0"))
NAME = env("MODEL_NAME", "llm-finetune-lora")
LOG_EVERY = max(1, STEPS // 20)

ranks = join()  # one process, or this node's rank of the job's process group
where = device(ranks)
if not (BASE / "config.json").exists():
    sys.exit(f"no base model at {BASE} (set base= to a data set holding llm-pretrain's model)")
torch.manual_seed(int(env("SEED", "0")))
tokenizer = CharTokenizer.load(BASE)
rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
texts = [f"Question: {r['instruction']}\nAnswer: {r['response']}\n\n" for r in rows]
held = max(1, len(texts) // 10)
train_texts, held_texts = texts[:-held], texts[-held:]
base = GPT2LMHeadModel.from_pretrained(BASE).to(where)
SEQ_LEN = base.config.n_positions


def encode(items: list[str]) -> torch.Tensor:
    ids = tokenizer.encode("".join(items))
    ids = ids[: max(SEQ_LEN, (len(ids) // SEQ_LEN) * SEQ_LEN)]
    ids += [0] * (-len(ids) % SEQ_LEN)
    return torch.tensor(ids, dtype=torch.long).view(-1, SEQ_LEN)


train, held_out = encode(train_texts), encode(held_texts)


def loss_on(model: torch.nn.Module, chunks: torch.Tensor) -> float:
    model.eval()
    chunks = chunks.to(where)
    with torch.no_grad():
        loss = float(model(chunks, labels=chunks).loss)
    model.train()
    return loss


base_loss = loss_on(base, held_out) if ranks.main else float("nan")  # rank 0 reports
config = LoraConfig(
    r=RANK,
    lora_alpha=2 * RANK,
    target_modules=["c_attn", "c_proj"],
    fan_in_fan_out=True,  # GPT-2's Conv1D layers
    lora_dropout=0.0,
    task_type="CAUSAL_LM",
)
model = get_peft_model(base, config)
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
if ranks.main:
    print(f"job {env('FABBRICA_JOB_ID')}: LoRA on {BASE}, {trainable:,} trainable", flush=True)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
generator = torch.Generator().manual_seed(int(env("SEED", "0")))

checkpoints = Checkpoints(ranks)  # saved by rank 0 only, loaded by every rank
step = 0
state = checkpoints.load()
if state is not None:
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    step = int(state["step"])
    if ranks.main:
        print(f"resuming from step {step}", flush=True)
agree(step, ranks)
trained = wrap(model, ranks)

model.train()
count = min(BATCH, len(train))
while step < STEPS:
    drawn = (count * ranks.world_size,)  # alike on every rank; each takes its own part
    picks = torch.randint(0, len(train), drawn, generator=generator)[ranks.shard(count)]
    inputs = train[picks].to(where)
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
            "adapter": get_peft_model_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "step": step,
        }
    )

if not ranks.main:  # rank 0 writes and registers the adapter
    leave(ranks)
    sys.exit(0)
tuned_loss = loss_on(model, held_out)
print(f"held-out loss: base {base_loss:.4f}, fine-tuned {tuned_loss:.4f}", flush=True)
folder = Path("outputs/adapter")
model.save_pretrained(folder)
tokenizer.save(folder)
# the adapter loads with PEFT's own from_pretrained, on the base it names
reloaded = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(BASE), folder).to(where)
assert abs(loss_on(reloaded, held_out) - tuned_loss) < 1e-4
base_lineage = BASE / "lineage.json"
register(
    folder,
    NAME,
    {
        "model": NAME,
        "kind": "LoRA adapter (PEFT)",
        "base_model": json.loads(base_lineage.read_text()) if base_lineage.exists() else None,
        "base_path": str(BASE),
        "steps": step,
        "nodes": ranks.world_size,
        "held_out_loss": {"base": base_loss, "fine_tuned": tuned_loss},
        "data": {"path": str(DATA), "sha256": sha256_of(DATA)},
        "job": env("FABBRICA_JOB_ID"),
    },
)
leave(ranks)
sys.exit(0 if tuned_loss < base_loss else 3)
