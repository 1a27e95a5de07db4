"""Train a classifier on scikit-learn's digits and save it to outputs/model.pkl.

Trains epoch by epoch (`partial_fit`) and checkpoints: every FABBRICA_CHECKPOINT_EVERY
seconds and on SIGUSR1 (the warning before the time limit) it saves the model and its epoch
to $FABBRICA_CHECKPOINT_DIR/state.pkl (whole: a temporary name, then a rename) and goes
on; a later run of the same job starts from there and its epoch counter goes on.
"""

import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

epochs = int(os.environ.get("EPOCHS", "200"))
delay = float(os.environ.get("STEP_DELAY", "0"))
folder = Path(os.environ.get("FABBRICA_CHECKPOINT_DIR") or "checkpoints")
every = float(os.environ.get("FABBRICA_CHECKPOINT_EVERY") or 600)
state_file = folder / "state.pkl"
print(
    f"job {os.environ.get('FABBRICA_JOB_ID')} on GPU(s) {os.environ.get('CUDA_VISIBLE_DEVICES')}",
    flush=True,  # seen at once by `fabbrica logs --follow` and the portal
)
if os.environ.get("FABBRICA_DATA"):  # data sets given with --dataset
    print(f"data sets: {sorted(os.listdir(os.environ['FABBRICA_DATA']))}", flush=True)
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
classes = np.unique(y)
if state_file.exists():
    with state_file.open("rb") as handle:
        model, done = pickle.load(handle)  # noqa: S301 - this job's own checkpoint
    print(f"resuming from epoch {done}", flush=True)
else:
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), random_state=0))
    model[0].fit(X_train)
    done = 0
scaled = model[0].transform(X_train)
warned = False


def save(epoch: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "state.pkl.tmp"
    with partial.open("wb") as handle:
        pickle.dump((model, epoch), handle)
    os.replace(partial, state_file)
    print(f"checkpoint: epoch {epoch}", flush=True)


def on_warning(*_: object) -> None:
    global warned
    warned = True


signal.signal(signal.SIGUSR1, on_warning)
saved_at = time.monotonic()
while done < epochs:
    model[1].partial_fit(scaled, y_train, classes=classes)
    done += 1
    if done % 20 == 0 or done == epochs:
        print(f"epoch {done}", flush=True)
    if warned:  # saved now; training goes on until the limit (the next run resumes)
        warned = False
        save(done)
        saved_at = time.monotonic()
    elif time.monotonic() - saved_at >= every:
        save(done)
        saved_at = time.monotonic()
    time.sleep(delay)
accuracy = model.score(X_test, y_test)
print(f"test accuracy: {accuracy:.4f}", flush=True)
Path("outputs").mkdir(exist_ok=True)
with open("outputs/model.pkl", "wb") as handle:
    pickle.dump(model, handle)
print("model written to outputs/model.pkl")
