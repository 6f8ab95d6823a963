"""The files of a week's trained model (`artifacts/week=W/model/`) and its summary record.

No torch: the bundle assembly and the evaluation read these without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_dagster.records import Record

# The files of `artifacts/week=W/model/`.
USER_TOWER = "user_tower.onnx"
WEIGHTS = "weights.pt"
FEATURES = "features.json"
SUMMARY = "train_summary.json"


@dataclass(frozen=True)
class TrainSummary(Record):
    """`train_summary.json`: how the week's model was trained and where it is tracked."""

    week: str
    dim: int
    history_len: int
    id_dropout: float
    temperature: float
    epochs_run: int
    best_epoch: int
    device: str
    examples_per_s: float
    load_seconds: float
    compute_seconds: float
    final_metrics: dict[str, float]  # validation metrics of the kept epoch
    history: list[dict[str, float]]  # one row per epoch
    mlflow_run_id: str
    mlflow_model_version: str
    onnx_max_abs_diff: float
    # Windows (days) of the item tower's popularity features; empty = no time-aware part.
    time_windows: list[int]
    # The Optuna search's trials (settings, best epoch, val Recall@20); empty without one.
    tuning: list[dict[str, float]] = field(default_factory=list)
