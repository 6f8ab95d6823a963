"""A week's model as files: train under an MLflow run, export the user tower to ONNX, and
serialise what the next stages need; and the reverse, a model back from those files.

Plain functions (torch + mlflow, no dagster); the `two_tower_model` and `item_embeddings`
assets call them and only read and write the lake.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from recsys_dagster.ml import tracking
from recsys_dagster.ml.artifacts import FEATURES, SUMMARY, USER_TOWER, WEIGHTS, TrainSummary
from recsys_dagster.ml.embed import item_embeddings
from recsys_dagster.ml.export import export_user_tower, verify_onnx
from recsys_dagster.ml.features import ItemFeatures
from recsys_dagster.ml.model import TwoTower, build_model
from recsys_dagster.ml.train import TrainConfig, TrainResult, train_two_tower


@dataclass(frozen=True)
class TrainedWeek:
    summary: TrainSummary
    files: dict[str, bytes]  # name -> content, for `artifacts/week=W/model/`
    run_url: str


def package_model(
    result: TrainResult, cfg: TrainConfig, week: str, run_id: str, model_version: str
) -> tuple[TrainSummary, dict[str, bytes]]:
    """ONNX user tower (checked against torch), weights, features and the summary."""
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        onnx_path = export_user_tower(result.model, Path(tmp) / USER_TOWER)
        onnx_diff = verify_onnx(result.model, onnx_path)
        onnx = onnx_path.read_bytes()
    weights = io.BytesIO()
    torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, weights)
    summary = TrainSummary(
        week=week,
        dim=cfg.dim,
        history_len=cfg.history_len,
        id_dropout=cfg.id_dropout,
        temperature=cfg.temperature,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        device=result.device,
        examples_per_s=result.examples_per_s,
        load_seconds=result.load_seconds,
        compute_seconds=result.compute_seconds,
        final_metrics=dict(result.final_metrics),
        history=list(result.history),
        mlflow_run_id=run_id,
        mlflow_model_version=model_version,
        onnx_max_abs_diff=float(onnx_diff),
    )
    files = {
        USER_TOWER: onnx,
        WEIGHTS: weights.getvalue(),
        FEATURES: result.features.to_json().encode(),
        SUMMARY: summary.to_json().encode(),
    }
    return summary, files


def fit_week(
    train: pa.Table,
    validation: pa.Table,
    items: pa.Table,
    cfg: TrainConfig,
    *,
    week: str,
    store: tracking.TrackingStore,
    checkpoint_dir: Path,
    tags: dict[str, str] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainedWeek:
    """Train the week's model inside an MLflow run (params, per-epoch metrics, the
    registered user tower) and package it."""
    with tracking.start_run(store, run_name=f"week-{week}", tags={"week": week, "partition": week, **(tags or {})}):
        tracking.log_params({**asdict(cfg), "week": week, "train_rows": train.num_rows, "items": items.num_rows})

        def log_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            tracking.log_epoch_metrics(epoch, metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        result = train_two_tower(train, validation, items, cfg, checkpoint_dir, on_epoch=log_epoch)
        tracking.log_epoch_metrics(result.epochs_run, result.final_metrics)
        run_id, model_version = tracking.log_model_and_register(store, result.model)
        summary, files = package_model(result, cfg, week, run_id, model_version)
        tracking.log_epoch_metrics(result.epochs_run, {"onnx_max_abs_diff": summary.onnx_max_abs_diff})
    return TrainedWeek(summary, files, tracking.run_url(store, run_id))


def refit_week(
    splits: list[pa.Table],
    items: pa.Table,
    cfg: TrainConfig,
    gated: TrainSummary,
    *,
    week: str,
    store: tracking.TrackingStore,
    checkpoint_dir: Path,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[TrainSummary, dict[str, bytes]]:
    """The production refit: the same settings on every split of the window (train,
    validation, test) for the gated model's best epoch count, keeping the last epoch. Its
    per-epoch metrics (on the test split, now inside its training data: a sanity check,
    not an evaluation) and its ONNX user tower are logged on the gated model's run."""
    epochs = gated.best_epoch  # 0 when the gated model is the initial one (epochs=0): so is the refit
    refit_cfg = replace(cfg, epochs=epochs, patience=epochs + 1, keep_last=True, refit=False)
    everything = pa.concat_tables([s.select(splits[0].column_names) for s in splits], promote_options="none")
    result = train_two_tower(everything, splits[-1], items, refit_cfg, checkpoint_dir, on_epoch=on_epoch)
    summary, files = package_model(result, refit_cfg, week, gated.mlflow_run_id, gated.mlflow_model_version)
    tracking.log_test_metrics(
        store,
        gated.mlflow_run_id,
        {
            "refit_epochs": epochs,
            "refit_train_examples": everything.num_rows,
            "refit_onnx_max_abs_diff": summary.onnx_max_abs_diff,
        },
    )
    tracking.log_files(store, gated.mlflow_run_id, {USER_TOWER: files[USER_TOWER], SUMMARY: files[SUMMARY]}, "refit")
    return summary, files


def load_model(summary: TrainSummary, features_json: bytes, weights: bytes) -> tuple[TwoTower, ItemFeatures]:
    """The trained model (CPU, eval mode) from the files `package_model` wrote."""
    features = ItemFeatures.from_json(features_json.decode())
    model = build_model(features, dim=summary.dim, id_dropout=summary.id_dropout, temperature=summary.temperature)
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval(), features


def embed_catalog(
    summary: TrainSummary, features_json: bytes, weights: bytes, items: pa.Table
) -> tuple[np.ndarray, bytes]:
    """Item vectors of every catalog row (cold items from content) and their `.npy` bytes."""
    model, features = load_model(summary, features_json, weights)
    emb = item_embeddings(model, features, items).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, emb, allow_pickle=False)
    return emb, npy.getvalue()
