"""Weekly ranking stage: LightGBM LambdaRank over the candidate sources, exported to ONNX."""

import tempfile
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from recsys_dagster.assets.common import config_from, md_kv, to_plain
from recsys_dagster.assets.model import TRAINING_POOL
from recsys_dagster.bundle.assemble import artifact_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.ml.ranker import RankerConfig
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

# Exported scores may differ from LightGBM's by float32 rounding of the leaf sums only.
MAX_EXPORT_DIFF = 1e-4

# The window grids stay in code (RankerConfig documents them); the scalar knobs are run config.
RankerSettings = config_from(RankerConfig, exclude=("windows_days", "trending_days"))


@asset(
    partitions_def=WEEKLY,
    deps=["faiss_index", "item_embeddings", "two_tower_model", "training_examples"],
    group_name="model",
    kinds={"lightgbm", "onnx", "mlflow"},
    pool=TRAINING_POOL,
    description="The ranking stage: candidates from the two-tower ANN, item-kNN and co-occurrence neighbours "
    "of the user's profile and trending items, ordered by a LightGBM LambdaRank model over their scores, "
    "item popularity windows and trend, item age and the user's category/brand/price affinity. Fitted on "
    "the validation window (features from data before it), gated on the test window, refit on the whole "
    "window for production; exported to ONNX.",
)
def ranker(
    context: AssetExecutionContext, config: RankerSettings, lake: LakeResource, mlflow: MlflowResource
) -> MaterializeResult:
    from recsys_dagster.bundle.ranker import fit_week_ranker, ranker_prefix
    from recsys_dagster.ml.artifacts import SUMMARY, TrainSummary
    from recsys_dagster.ml.tracking import log_files, log_test_metrics, log_text, run_url

    week = context.partition_key
    the_lake = lake.get_lake()
    cfg = to_plain(config, RankerConfig)
    with tempfile.TemporaryDirectory(prefix="recsys-ranker-") as tmp:
        report = fit_week_ranker(the_lake, week, Path(tmp), cfg)
    summary = TrainSummary.from_json(the_lake.get_bytes(f"{artifact_prefix(week, 'model')}/{SUMMARY}"))
    store = mlflow.store()
    log_test_metrics(
        store,
        summary.mlflow_run_id,
        {
            "ranker_best_iteration": report.best_iteration,
            "ranker_holdout_ndcg_at_20": report.holdout_ndcg_at_20,
            "ranker_validation_pool_recall": report.validation_pool_recall,
            "ranker_test_pool_recall": report.test_pool_recall,
            "ranker_tuning_trials": len(report.tuning_trials),
        },
    )
    prefix = ranker_prefix(week)
    log_text(store, summary.mlflow_run_id, report.to_json(), "ranker/report.json")
    log_text(store, summary.mlflow_run_id, cfg_json(cfg), "ranker/config.json")
    log_files(
        store,
        summary.mlflow_run_id,
        {name: the_lake.get_bytes(f"{prefix}/{name}") for name in ("ranker_eval.txt", "ranker_ship.txt")},
        "ranker",
    )
    top_features = dict(list(report.feature_importance.items())[:8])
    return MaterializeResult(
        metadata={
            "trees": report.best_iteration,
            "holdout_ndcg@20": round(report.holdout_ndcg_at_20, 5),
            "validation_queries": report.validation_queries,
            "test_queries": report.test_queries,
            "candidate_pool_recall/validation": round(report.validation_pool_recall, 5),
            "candidate_pool_recall/test": round(report.test_pool_recall, 5),
            "trending_window_days": report.trending_days,
            "tuning_trials": len(report.tuning_trials),
            "tuned": MetadataValue.json(report.tuned_params),
            "refit": report.refit,
            "onnx_max_abs_diff": report.onnx_max_abs_diff,
            "top_features": md_kv(top_features, "feature", "share of gain"),
            "seconds": md_kv(report.seconds, "step", "seconds"),
            "mlflow_run": MetadataValue.url(run_url(store, summary.mlflow_run_id)),
            "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        }
    )


def cfg_json(cfg: RankerConfig) -> str:
    import dataclasses
    import json

    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


@asset_check(
    asset="ranker",
    blocking=True,
    partitions_def=WEEKLY,
    description=f"The exported ONNX rankers (gated and shipped) score the training features as LightGBM does "
    f"(max |difference| <= {MAX_EXPORT_DIFF}), and the candidate sources reach some validation target.",
)
def ranker_export_parity(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    from recsys_dagster.bundle.ranker import read_report

    report = read_report(lake.get_lake(), context.partition_key)
    if report is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, metadata={"error": "no report"})
    worst = max(report.onnx_max_abs_diff, report.onnx_max_abs_diff_refit)
    return AssetCheckResult(
        passed=worst <= MAX_EXPORT_DIFF and report.validation_pool_recall > 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "onnx_max_abs_diff": worst,
            "threshold": MAX_EXPORT_DIFF,
            "validation_pool_recall": round(report.validation_pool_recall, 5),
        },
    )


RANKER_CHECKS = [ranker_export_parity]
