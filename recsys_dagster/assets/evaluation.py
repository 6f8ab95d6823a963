"""Weekly offline evaluation: candidate vs champion vs baselines, same users, same targets."""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import md_kv
from recsys_dagster.contract import EVALUATION, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

PLOTTED_METRICS = ("recall@20", "ndcg@10", "mrr", "coverage@10", "popularity_bias@10")


@asset(
    partitions_def=WEEKLY,
    deps=["faiss_index", "item_embeddings", "two_tower_model", "training_examples"],
    group_name="deployment",
    kinds={"onnx", "faiss"},
    description="Full-ranking offline metrics on the held-out test window (whole active catalog): "
    "the candidate through the serving path and by exact search, the current champion, and "
    "popularity and session co-occurrence baselines, on the same users and targets.",
)
def model_evaluation(context: AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource) -> MaterializeResult:
    from recsys_dagster.bundle.evaluation import evaluate_week
    from recsys_dagster.ml.tracking import log_test_metrics

    week = context.partition_key
    the_lake = lake.get_lake()
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        record, report = evaluate_week(the_lake, week, Path(tmp))
    prefix = week_prefix(EVALUATION, week)
    the_lake.write_json(f"{prefix}/metrics.json", record.to_dict())
    the_lake.write_parquet(f"{prefix}/per_user.parquet", report.per_user)
    log_test_metrics(
        mlflow.store(),
        record.mlflow_run_id,
        {
            f"test_{system}_{name}": value
            for system, metrics in record.systems.items()
            for name, value in metrics.items()
        },
    )

    systems = record.systems
    meta: dict = {
        "report": MetadataValue.md(report.markdown()),
        "users": record.n_users,
        "active_items": record.n_items,
        "champion_version": record.champion_version or "none",
        "index_loss_recall@20": round(systems["candidate_exact"]["recall@20"] - systems["candidate"]["recall@20"], 5),
        "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        "segments": md_kv(
            {seg: ", ".join(f"{s}={m['recall@20']:.3f}" for s, m in v.items()) for seg, v in record.segments.items()},
            "segment",
            "recall@20",
        ),
    }
    for system, metrics in systems.items():
        for name in PLOTTED_METRICS:
            meta[f"{system}/{name}"] = round(float(metrics[name]), 5)
    return MaterializeResult(metadata=meta)
