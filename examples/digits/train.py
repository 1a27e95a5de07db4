"""Train a classifier on the digits and save it to outputs/model.pkl.

The data: the data set `digits` at $FABBRICA_DATA/digits when the job reads it
(job-with-data.yaml), otherwise the copy scikit-learn ships. With MLflow at hand (a job gets
MLFLOW_TRACKING_URI and a token for its project), the run's parameters, its accuracy and the
model are logged, and the model is registered as `digits` (alias `candidate`)."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
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
data = Path(os.environ.get("FABBRICA_DATA", "/nonexistent")) / "digits" / "digits.csv.gz"
if data.is_file():
    with gzip.open(data, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    X, y = table[:, :-1], table[:, -1].astype(int)
    print(f"data: the data set digits ({len(y)} images)", flush=True)
else:
    X, y = load_digits(return_X_y=True)
    print("data: scikit-learn's copy of digits", flush=True)
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


def track() -> None:
    """Log the run and register the model: the project's MLflow, as the job was given it."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_experiment("digits")
    with mlflow.start_run() as run:
        mlflow.log_params({"epochs": epochs, "hidden": 64})
        mlflow.log_metric("accuracy", accuracy)
        mlflow.log_artifact("outputs/model.pkl", artifact_path="model")
    tracking = MlflowClient()
    try:
        tracking.get_registered_model("digits")
    except MlflowException:
        tracking.create_registered_model("digits")
    version = tracking.create_model_version(
        "digits", f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    tracking.set_registered_model_alias("digits", "candidate", version.version)
    print(f"registered digits@{version.version}", flush=True)


if os.environ.get("MLFLOW_TRACKING_URI"):
    try:
        track()
    except ImportError:
        print("mlflow is not installed: nothing logged")
    except Exception as exc:  # the model is in outputs/ all the same
        print(f"MLflow tracking failed: {exc}")
