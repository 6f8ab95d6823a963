"""Weekly offline evaluation: candidate vs champion vs baselines, same users, same targets."""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import md_kv
from recsys_dagster.bundle.assemble import artifact_prefix, assemble_bundle_dir
from recsys_dagster.contract import EVALUATION, TRAINING, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource


def load_champion(lake, dest: Path):
    """The promoted bundle as a serving Engine, or None when nothing is promoted yet."""
    from recsys_dagster.bundle.format import fetch_bundle, read_pointer
    from recsys_dagster.serving.engine import Engine

    pointer = read_pointer(lake)
    if pointer is None:
        return None, None
    fetch_bundle(lake, pointer["version"], dest)
    return Engine.from_dir(dest, version=pointer["version"]), pointer


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
    import pyarrow.parquet as pq

    from recsys_dagster.ml.evaluate import build_queries, evaluate, train_sessions_from
    from recsys_dagster.serving.engine import Engine

    week = context.partition_key
    the_lake = lake.get_lake()
    base = week_prefix(TRAINING, week)
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        cand_dir = Path(tmp) / "candidate"
        bundle_meta = assemble_bundle_dir(the_lake, week, cand_dir)
        candidate = Engine.from_dir(cand_dir, version=f"candidate-{week}")
        champion, pointer = load_champion(the_lake, Path(tmp) / "champion")
        items = pq.read_table(cand_dir / "items.parquet")
        test = the_lake.read_parquet(f"{base}/test")
        train = the_lake.read_parquet(f"{base}/train", columns=["session_id", "item_id", "timestamp"])
        active = {i for i, a in zip(items.column("item_id").to_pylist(), items.column("active").to_pylist()) if a}
        queries = build_queries(test, active)
        report = evaluate(candidate, queries, train_sessions=train_sessions_from(train), items=items, champion=champion)

    summary = the_lake.read_json(f"{artifact_prefix(week, 'model')}/train_summary.json")
    window = the_lake.read_json(f"{base}/summary.json")["summary"]
    bundle_meta["training_window"] = {"window": window.get("window"), "splits": window.get("split_ranges")}
    result = {
        **report.to_dict(),
        "week": week,
        "champion_version": pointer["version"] if pointer else None,
        "candidate": {"mlflow_run_id": summary["mlflow_run_id"], "mlflow_model_version": summary["mlflow_model_version"], **bundle_meta},
    }
    prefix = week_prefix(EVALUATION, week)
    the_lake.write_json(f"{prefix}/metrics.json", result)
    the_lake.write_parquet(f"{prefix}/per_user.parquet", report.per_user)

    mlflow.activate()
    from mlflow import MlflowClient

    client = MlflowClient()
    for system, metrics in report.systems.items():
        for name, value in metrics.items():
            client.log_metric(summary["mlflow_run_id"], f"test_{system}_{name}".replace("@", "_at_"), float(value))

    systems = report.systems
    meta: dict = {
        "report": MetadataValue.md(report.markdown()),
        "users": report.n_users,
        "active_items": report.n_items,
        "champion_version": result["champion_version"] or "none",
        "index_loss_recall@20": round(systems["candidate_exact"]["recall@20"] - systems["candidate"]["recall@20"], 5),
        "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        "segments": md_kv({seg: ", ".join(f"{s}={m['recall@20']:.3f}" for s, m in v.items()) for seg, v in report.segments.items()}, "segment", "recall@20"),
    }
    for system, metrics in systems.items():
        for name in ("recall@20", "ndcg@10", "mrr", "coverage@10", "popularity_bias@10"):
            meta[f"{system}/{name}"] = round(float(metrics[name]), 5)
    return MaterializeResult(metadata=meta)

