"""Weekly offline evaluation: candidate vs champion vs baselines, same users, same targets."""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import config_from, to_plain
from recsys_dagster.contract import EVALUATION, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.ml.baselines import BaselineConfig
from recsys_dagster.ml.evaluate import CATALOG_METRICS, HEADLINE
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

# The grids stay in code (BaselineConfig documents them); the scalar knobs are run config.
EvaluationSettings = config_from(BaselineConfig, exclude=("recent_windows_days", "ease_lambdas"))


@asset(
    partitions_def=WEEKLY,
    deps=["ranker", "faiss_index", "item_embeddings", "two_tower_model", "training_examples"],
    group_name="deployment",
    kinds={"onnx", "faiss"},
    description="Full-ranking offline metrics on the held-out test window (whole active catalog, every item "
    "the user had a positive on before the window excluded): the candidate (two-tower + candidate sources + "
    "ranker) through the serving path, the two-tower stage alone through the index and by exact search, "
    "the current champion, and the baselines (popularity, recent popularity, session "
    "co-occurrence, item-kNN, EASE; parameters chosen on the validation window), on the same users and targets.",
)
def model_evaluation(
    context: AssetExecutionContext, config: EvaluationSettings, lake: LakeResource, mlflow: MlflowResource
) -> MaterializeResult:
    from recsys_dagster.bundle.evaluation import evaluate_week
    from recsys_dagster.ml.tracking import log_test_metrics, log_text

    week = context.partition_key
    the_lake = lake.get_lake()
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        record, report = evaluate_week(the_lake, week, Path(tmp), to_plain(config, BaselineConfig))
    prefix = week_prefix(EVALUATION, week)
    the_lake.write_json(f"{prefix}/metrics.json", record.to_dict())
    the_lake.write_parquet(f"{prefix}/per_user.parquet", report.per_user)
    table = record.markdown()
    store = mlflow.store()
    log_test_metrics(
        store,
        record.mlflow_run_id,
        {
            f"test_{system}_{name}": value
            for system, metrics in record.systems.items()
            for name, value in metrics.items()
        },
    )
    log_text(store, record.mlflow_run_id, table, f"evaluation/week={week}.md")

    systems = record.systems
    strongest, strongest_recall = record.strongest_baseline()
    meta: dict = {
        "report": MetadataValue.md(table),
        "test_users": record.n_users,
        "validation_users": record.validation_users,
        "active_items": record.n_items,
        "champion_version": record.champion_version or "none",
        "strongest_baseline": strongest,
        "strongest_baseline/recall@20": round(strongest_recall, 5),
        "recent_popularity_window": record.baselines["recent_popularity"]["window"],
        "ease": record.baselines["ease"].get("skipped") or f"lambda={record.baselines['ease']['lambda']:g}",
        "index_loss_recall@20": round(
            systems["two_tower_exact"]["recall@20"] - systems.get("two_tower", systems["candidate"])["recall@20"], 5
        ),
        "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
    }
    for system, metrics in systems.items():
        for name in (*HEADLINE, *CATALOG_METRICS):
            meta[f"{system}/{name}"] = round(float(metrics[name]), 5)
    return MaterializeResult(metadata=meta)
