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
from recsys_dagster.ml.popularity import N_TIME_FEATURES, WINDOWS_DAYS, ItemClock, first_seen_by_index, first_seen_days
from recsys_dagster.ml.train import TrainConfig, TrainResult, train_two_tower
from recsys_dagster.ml.tune import SPACE, tune_two_tower


@dataclass(frozen=True)
class TrainedWeek:
    summary: TrainSummary
    files: dict[str, bytes]  # name -> content, for `artifacts/week=W/model/`
    run_url: str
    config: TrainConfig  # what trained the model: the search's choice when there was one


def package_model(
    result: TrainResult,
    cfg: TrainConfig,
    week: str,
    run_id: str,
    model_version: str,
    tuning: list[dict[str, float]] | None = None,
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
        time_windows=list(WINDOWS_DAYS) if cfg.time_features else [],
        tuning=list(tuning or []),
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

        tuning: list[dict[str, float]] = []
        if cfg.tune_seconds > 0:
            tuned = tune_two_tower(train, validation, items, cfg, checkpoint_dir)
            result, cfg, tuning = tuned.result, tuned.config, tuned.trials
            for i, row in enumerate(tuning):
                tracking.log_epoch_metrics(i, {f"tune/{k}": v for k, v in row.items()})
            tracking.log_params(
                {f"tuned_{name}": getattr(cfg, name) for name, *_ in SPACE} | {"tune_trials_run": len(tuning)}
            )
            for row in result.history:
                log_epoch(int(row["epoch"]), row)
        else:
            result = train_two_tower(train, validation, items, cfg, checkpoint_dir, on_epoch=log_epoch)
        tracking.log_epoch_metrics(result.epochs_run, result.final_metrics)
        run_id, model_version = tracking.log_model_and_register(store, result.model)
        summary, files = package_model(result, cfg, week, run_id, model_version, tuning)
        tracking.log_epoch_metrics(result.epochs_run, {"onnx_max_abs_diff": summary.onnx_max_abs_diff})
    return TrainedWeek(summary, files, tracking.run_url(store, run_id), cfg)


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
    refit_cfg = replace(cfg, epochs=epochs, patience=epochs + 1, keep_last=True, refit=False, tune_seconds=0.0)
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
    if summary.time_windows and list(summary.time_windows) != list(WINDOWS_DAYS):
        raise ValueError(f"model has time windows {summary.time_windows}, this code computes {list(WINDOWS_DAYS)}")
    model = build_model(
        features,
        dim=summary.dim,
        id_dropout=summary.id_dropout,
        temperature=summary.temperature,
        n_time=N_TIME_FEATURES if summary.time_windows else 0,
    )
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval(), features


def catalog_clock(features_json: bytes, items: pa.Table, positives: pa.Table) -> ItemClock:
    """The positives (`item_id`, `timestamp` columns) by (item, day) for a model's features."""
    import pyarrow.compute as pc

    features = ItemFeatures.from_json(features_json.decode())
    idx = features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))
    first = first_seen_by_index(idx, items, features.n_ids)
    ts = pc.cast(pc.cast(positives.column("timestamp"), pa.timestamp("us", tz="UTC")), pa.int64())
    item = features.item_index(positives.column("item_id").to_numpy(zero_copy_only=False))
    return ItemClock.fit(item, np.asarray(ts.to_numpy(zero_copy_only=False), dtype=np.int64), first)


def embed_catalog(
    summary: TrainSummary,
    features_json: bytes,
    weights: bytes,
    items: pa.Table,
    clock: ItemClock | None = None,
    day: int | None = None,
) -> tuple[np.ndarray, bytes]:
    """Item vectors of every catalog row (cold items from content) and their `.npy` bytes.
    A time-aware model needs `clock` and the `day` its vectors serve from (the first day
    after the data they may know)."""
    model, features = load_model(summary, features_json, weights)
    time = None
    if summary.time_windows:
        if clock is None or day is None:
            raise ValueError("a time-aware model needs the positives (clock) and the day to embed the catalog at")
        ids = features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))
        time = clock.features(ids, np.int64(day), first_day=first_seen_days(items))
    emb = item_embeddings(model, features, items, time).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, emb, allow_pickle=False)
    return emb, npy.getvalue()
