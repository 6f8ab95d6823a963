"""The week's offline evaluation over the lake: the candidate scored from its bundle exactly
as serving would, beside the current champion and the baselines, on the same users.

Plain function called by the `model_evaluation` asset; no dagster, no torch.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq

from recsys_dagster.bundle.assemble import artifact_prefix, assemble_bundle_dir
from recsys_dagster.bundle.format import fetch_bundle, read_pointer
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.ml.artifacts import SUMMARY, TrainSummary
from recsys_dagster.ml.baselines import BaselineConfig
from recsys_dagster.ml.evaluate import PRIOR_COLUMNS, EvaluationRecord, Report, evaluate
from recsys_dagster.spark.examples import read_summary


def split_start(split_ranges: dict[str, list[str]], split: str) -> datetime:
    """00:00 UTC of the split's first day (`ExamplesSummary.split_ranges`)."""
    if split not in split_ranges:
        raise ValueError(f"the week's summary has no {split!r} split range: {sorted(split_ranges)}")
    first = date.fromisoformat(split_ranges[split][0])
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def evaluate_week(
    lake: Lake, week: str, workdir: Path, cfg: BaselineConfig | None = None
) -> tuple[EvaluationRecord, Report]:
    """The record the gate reads (`metrics.json`) and the full report (per-user rows)."""
    from recsys_dagster.serving.engine import Engine

    base = week_prefix(TRAINING, week)
    cand_dir = workdir / "candidate"
    assemble_bundle_dir(lake, week, cand_dir, stage="eval")
    candidate = Engine.from_dir(cand_dir, version=f"candidate-{week}")
    pointer = read_pointer(lake)
    champion = None
    if pointer is not None:
        fetch_bundle(lake, pointer["version"], workdir / "champion")
        champion = Engine.from_dir(workdir / "champion", version=pointer["version"])
    items = pq.read_table(cand_dir / "items.parquet")
    query_columns = [*PRIOR_COLUMNS, "history", "device_type", "hour"]
    examples, _ = read_summary(lake, week)
    report = evaluate(
        candidate,
        train=lake.read_parquet(f"{base}/train", columns=PRIOR_COLUMNS),
        validation=lake.read_parquet(f"{base}/validation", columns=query_columns),
        test=lake.read_parquet(f"{base}/test", columns=query_columns),
        items=items,
        validation_start=split_start(examples.split_ranges, "validation"),
        test_start=split_start(examples.split_ranges, "test"),
        champion=champion,
        cfg=cfg,
    )

    summary = TrainSummary.from_json(lake.get_bytes(f"{artifact_prefix(week, 'model')}/{SUMMARY}"))
    record = EvaluationRecord(
        week=week,
        n_users=report.n_users,
        n_items=report.n_items,
        systems=report.systems,
        segments=report.segments,
        validation_users=report.validation_users,
        baselines=report.baselines,
        champion_version=pointer["version"] if pointer else None,
        mlflow_run_id=summary.mlflow_run_id,
        mlflow_model_version=summary.mlflow_model_version,
        training_window={"window": examples.window, "splits": examples.split_ranges},
    )
    return record, report
