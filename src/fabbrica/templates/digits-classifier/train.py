"""Train a classifier on scikit-learn's digits and save it to outputs/model.pkl."""

import os
import pickle
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

epochs = int(os.environ.get("EPOCHS", "200"))
print(
    f"job {os.environ.get('FABBRICA_JOB_ID')} on GPU(s) {os.environ.get('CUDA_VISIBLE_DEVICES')}",
    flush=True,  # seen at once by `fabbrica logs --follow` and the portal
)
if os.environ.get("FABBRICA_DATA"):  # data sets given with --dataset
    print(f"data sets: {sorted(os.listdir(os.environ['FABBRICA_DATA']))}", flush=True)
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model = make_pipeline(
    StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=epochs, random_state=0)
)
model.fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"test accuracy: {accuracy:.4f}", flush=True)
Path("outputs").mkdir(exist_ok=True)
with open("outputs/model.pkl", "wb") as handle:
    pickle.dump(model, handle)
print("model written to outputs/model.pkl")
