"""Optuna search of the two-tower settings that matter most, on validation, within a time
budget (`TrainConfig.tune_seconds`; 0 = train once with the configured values).

Each trial is a full training run (early stopping on validation Recall@20) with its own
settings; the configured values are the first trial, so the search can only keep or improve
validation Recall@20. The best trial's trained model is the result: nothing is retrained.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from recsys_dagster.ml.train import TrainConfig, TrainResult, train_two_tower

log = logging.getLogger(__name__)

# (name, low, high, log scale) of each searched TrainConfig field.
SPACE: tuple[tuple[str, float, float, bool], ...] = (
    ("lr", 5e-4, 1e-2, True),
    ("temperature", 0.02, 0.2, True),
    ("id_dropout", 0.0, 0.6, False),
    ("context_dropout", 0.0, 0.5, False),
)


@dataclass(frozen=True)
class Tuned:
    result: TrainResult
    config: TrainConfig  # the best trial's settings
    trials: list[dict[str, float]]  # every finished trial: its settings, best epoch and val Recall@20


def tune_two_tower(
    train: pa.Table,
    validation: pa.Table,
    items: pa.Table,
    cfg: TrainConfig,
    checkpoint_dir: Path,
) -> Tuned:
    """Train with the configured settings, then with Optuna's (TPE, seeded) until
    `cfg.tune_seconds` or `cfg.tune_trials`; keep the best by validation Recall@20."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.enqueue_trial({name: getattr(cfg, name) for name, *_ in SPACE})
    kept: dict[str, tuple[float, TrainResult, TrainConfig]] = {}  # only the best model stays in memory

    def objective(trial) -> float:
        values = {name: trial.suggest_float(name, lo, hi, log=log_scale) for name, lo, hi, log_scale in SPACE}
        trial_cfg = replace(cfg, **values, resume=False)
        trial_dir = Path(checkpoint_dir) / f"trial-{trial.number}"
        result = train_two_tower(train, validation, items, trial_cfg, trial_dir)
        shutil.rmtree(trial_dir, ignore_errors=True)
        score = float(result.final_metrics["val_recall@20"])
        row = {**values, "best_epoch": float(result.best_epoch), "val_recall@20": score}
        trial.set_user_attr("row", row)
        if "best" not in kept or score > kept["best"][0]:
            kept["best"] = (score, result, trial_cfg)
        return score

    study.optimize(objective, n_trials=cfg.tune_trials, timeout=cfg.tune_seconds)
    score, result, best_cfg = kept["best"]
    trials = [t.user_attrs["row"] for t in study.trials if "row" in t.user_attrs]
    log.info("two-tower search: %d trials, best val Recall@20 %.4f", len(trials), score)
    return Tuned(result, replace(best_cfg, resume=cfg.resume), trials)
