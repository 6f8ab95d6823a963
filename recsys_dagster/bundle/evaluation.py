"""The week's offline evaluation over the lake: the candidate scored from its bundle exactly
as serving would, beside the current champion and the baselines, on the same users.

Plain function called by the `model_evaluation` asset; no dagster, no torch.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from recsys_dagster.bundle.assemble import artifact_prefix, assemble_bundle_dir
from recsys_dagster.bundle.format import fetch_bundle, read_pointer
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.ml.artifacts import SUMMARY, TrainSummary
from recsys_dagster.ml.evaluate import EvaluationRecord, Report, build_queries, evaluate, train_sessions_from
from recsys_dagster.spark.examples import read_summary


def evaluate_week(lake: Lake, week: str, workdir: Path) -> tuple[EvaluationRecord, Report]:
    """The record the gate reads (`metrics.json`) and the full report (per-user rows)."""
    from recsys_dagster.serving.engine import Engine

    base = week_prefix(TRAINING, week)
    cand_dir = workdir / "candidate"
    assemble_bundle_dir(lake, week, cand_dir)
    candidate = Engine.from_dir(cand_dir, version=f"candidate-{week}")
    pointer = read_pointer(lake)
    champion = None
    if pointer is not None:
        fetch_bundle(lake, pointer["version"], workdir / "champion")
        champion = Engine.from_dir(workdir / "champion", version=pointer["version"])
    items = pq.read_table(cand_dir / "items.parquet")
    test = lake.read_parquet(f"{base}/test")
    train = lake.read_parquet(f"{base}/train", columns=["session_id", "item_id", "timestamp"])
    active = {i for i, a in zip(items.column("item_id").to_pylist(), items.column("active").to_pylist()) if a}
    report = evaluate(
        candidate,
        build_queries(test, active),
        train_sessions=train_sessions_from(train),
        items=items,
        champion=champion,
    )

    summary = TrainSummary.from_json(lake.get_bytes(f"{artifact_prefix(week, 'model')}/{SUMMARY}"))
    examples, _ = read_summary(lake, week)
    record = EvaluationRecord(
        week=week,
        n_users=report.n_users,
        n_items=report.n_items,
        systems=report.systems,
        segments=report.segments,
        champion_version=pointer["version"] if pointer else None,
        mlflow_run_id=summary.mlflow_run_id,
        mlflow_model_version=summary.mlflow_model_version,
        training_window={"window": examples.window, "splits": examples.split_ranges},
    )
    return record, report
