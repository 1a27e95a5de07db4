#!/bin/sh
# Run Python with PyTorch, transformers and PEFT: a virtual environment kept in the
# user's cache and made once, by pip (`pip install torch==2.13.0` takes the CPU build
# from the machine's local wheels; another version or uv would download gigabytes).
set -eu
# SIGUSR1 asks for a checkpoint (Fabbrica sends it a grace period before the time limit;
# Slurm may send it up to a minute early, and srun passes it to every node's process).
# Until Python's handler takes it (training.py), ignore it rather than die of it: an
# ignored signal stays ignored across exec, a trapped one would not.
trap '' USR1
cache="${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}"
if mkdir -p "$cache/fabbrica" 2>/dev/null && [ -w "$cache/fabbrica" ]; then
    venv="$cache/fabbrica/llm-torch-2.13.0"  # made once per user
else  # a job isolated as its own user may not reach its home by path: its own folder
    venv=".venv-llm"
fi
venv="${FABBRICA_LLM_VENV:-$venv}"
mkdir -p "$(dirname "$venv")"
(
    flock 9
    if ! "$venv/bin/python" -c "import torch, transformers, peft" 2>/dev/null; then
        echo "installing PyTorch 2.13.0, transformers and PEFT in $venv" >&2
        python="$(command -v python || command -v python3)"  # Debian has no `python`
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "torch==2.13.0" "transformers>=4.40" "peft>=0.10" "safetensors>=0.4"
    fi
) 9>"$venv.lock"
exec "$venv/bin/python" "$@"
