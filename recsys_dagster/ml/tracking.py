"""MLflow tracking for the two-tower model: runs, per-epoch metrics, the registered model
`recsys-two-tower` and its `champion` alias.

The store is a `TrackingStore` the caller passes in (built from `Settings`: by default
`sqlite:///<RECSYS_HOME>/mlflow.db`, artifacts under `<RECSYS_HOME>/mlartifacts`). The registered model is the
user tower (what serving runs, as ONNX in the bundle), saved in MLflow's `pt2` format
(torch.export) with a pickle fallback should torch.export reject the module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_dagster.ml.export import example_inputs
from recsys_dagster.ml.model import TwoTower
from recsys_dagster.settings import DEFAULT_MLFLOW_UI_URL, DEFAULT_MODEL_NAME, Settings

log = logging.getLogger(__name__)

EXPERIMENT = "recsys-two-tower"
CHAMPION = "champion"


@dataclass(frozen=True)
class TrackingStore:
    """Where runs and registered models live, passed in by the caller (no environment)."""

    tracking_uri: str
    artifact_root: Path  # new experiments keep their artifacts here (never the repo root)
    ui_url: str = DEFAULT_MLFLOW_UI_URL
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = EXPERIMENT

    @classmethod
    def from_settings(cls, s: Settings) -> TrackingStore:
        return cls(s.mlflow_tracking_uri, s.mlflow_artifact_root, s.mlflow_ui_url, s.mlflow_model_name)


def _mlflow(store: TrackingStore):
    import mlflow

    if store.tracking_uri.startswith("sqlite:///"):
        Path(store.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    return mlflow


def experiment_id(store: TrackingStore) -> str:
    """The experiment's id, created with its artifacts under `store.artifact_root`."""
    mlflow = _mlflow(store)
    exp = mlflow.get_experiment_by_name(store.experiment)
    if exp is not None:
        return exp.experiment_id
    store.artifact_root.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(store.experiment, artifact_location=store.artifact_root.as_uri())


@contextmanager
def start_run(store: TrackingStore, run_name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """An active MLflow run in the store's experiment; yields the `mlflow.ActiveRun`. The
    logging helpers below write to this active run."""
    mlflow = _mlflow(store)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment_id(store), tags=tags or {}) as run:
        yield run


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()})


def log_epoch_metrics(step: int, metrics: dict[str, Any]) -> None:
    """Numeric, finite metrics only (MLflow rejects others); `@` becomes `_at_`
    (`val_recall@20` -> `val_recall_at_20`), which MLflow does not allow in names."""
    clean = {
        metric_name(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
    }
    import mlflow

    mlflow.log_metrics(clean, step=step)


def metric_name(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key.replace("@", "_at_"))


class UserTowerModule(torch.nn.Module):
    """The user tower as a plain tensors-in / tensor-out module for MLflow. The argument is
    `device_index`, not `device`: torch.export's generated code calls `device(type=...)`,
    which an argument named `device` would shadow when the pt2 model is loaded."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.tower = model.user_tower

    def forward(self, history_emb, history_mask, device_index, hour):  # type: ignore[override]
        return self.tower(history_emb, history_mask, device_index, hour)


def user_tower_input_example(dim: int, batch: int = 2, length: int = 5) -> tuple[np.ndarray, ...]:
    """Contract-shaped numpy inputs; batch >= 2 because torch.export specialises size 1."""
    return tuple(t.numpy() for t in example_inputs(dim, batch=max(batch, 2), length=length))


def user_tower_signature(dim: int):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    f32, i64 = np.dtype("float32"), np.dtype("int64")
    inputs = Schema(
        [
            TensorSpec(f32, (-1, -1, dim), "history_emb"),
            TensorSpec(f32, (-1, -1), "history_mask"),
            TensorSpec(i64, (-1,), "device"),
            TensorSpec(i64, (-1,), "hour"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(f32, (-1, dim), "user_vec")]))


def _requirements() -> list[str]:
    # Explicit, so MLflow skips its slow requirement inference (a subprocess per log).
    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


def log_model_and_register(
    store: TrackingStore, model: TwoTower, input_example: tuple[np.ndarray, ...] | None = None
) -> tuple[str, str]:
    """Log the user tower to the active run and register it as `store.model_name`;
    returns (run_id, version)."""
    mlflow = _mlflow(store)
    name = store.model_name
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_model_and_register needs an active run (use start_run)")
    module = UserTowerModule(model).cpu().float().eval()
    example = input_example or user_tower_input_example(model.dim)
    try:
        info = mlflow.pytorch.log_model(
            module,
            name="user_tower",
            input_example=example,
            signature=user_tower_signature(model.dim),  # pt2 needs TensorSpecs; a tuple example gives none
            serialization_format="pt2",
            registered_model_name=name,
            pip_requirements=_requirements(),
        )
    except Exception as exc:  # torch.export can reject a module; the pickle format cannot
        log.warning("pt2 logging failed (%s); falling back to MLflow's pickle format", exc)
        mlflow.set_tag("model_format_fallback", f"pickle: {type(exc).__name__}")
        info = mlflow.pytorch.log_model(
            module,
            name="user_tower_pickle",
            signature=user_tower_signature(model.dim),
            serialization_format="pickle",
            registered_model_name=name,
            pip_requirements=_requirements(),
        )
    version = info.registered_model_version
    if version is None:
        raise RuntimeError(f"model {name!r} was logged but not registered")
    return run.info.run_id, str(version)


def set_champion_alias(store: TrackingStore, version: str | int) -> None:
    from mlflow import MlflowClient

    _mlflow(store)
    MlflowClient().set_registered_model_alias(store.model_name, CHAMPION, str(version))


def champion_version(store: TrackingStore) -> str | None:
    """The version holding the champion alias, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _mlflow(store)
    try:
        return str(MlflowClient().get_model_version_by_alias(store.model_name, CHAMPION).version)
    except MlflowException:
        return None


def run_url(store: TrackingStore, run_id: str) -> str:
    """UI link to a run: `<ui_url>/#/experiments/<id>/runs/<run_id>`."""
    exp = _mlflow(store).get_run(run_id).info.experiment_id
    return f"{store.ui_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def log_test_metrics(store: TrackingStore, run_id: str, metrics: dict[str, float]) -> None:
    """Metrics measured after the run ended (the weekly evaluation) onto that run."""
    from mlflow import MlflowClient

    _mlflow(store)
    client = MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, metric_name(key), float(value))


def move_champion_alias(store: TrackingStore, model_version: str | None) -> str | None:
    """Point the `champion` alias of `store.model_name` at the registered version a
    promoted manifest names (after a rollback); None when it names none."""
    if model_version is None:
        return None
    set_champion_alias(store, model_version)
    return f"{store.model_name} v{model_version}"


def log_text(store: TrackingStore, run_id: str, text: str, artifact_file: str) -> None:
    """A text artifact (e.g. the week's evaluation table, `evaluation/week=W.md`) on a run
    that has ended."""
    from mlflow import MlflowClient

    _mlflow(store)
    MlflowClient().log_text(run_id, text, artifact_file)


def log_files(store: TrackingStore, run_id: str, files: dict[str, bytes], artifact_path: str) -> None:
    """Files (name -> bytes) as artifacts under `artifact_path` of a run that has ended
    (the week's ranker beside its two-tower model)."""
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    _mlflow(store)
    with tempfile.TemporaryDirectory(prefix="recsys-mlflow-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        MlflowClient().log_artifacts(run_id, tmp, artifact_path)
