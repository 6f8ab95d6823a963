"""Weekly training examples: a rolling window of sessions -> time-split examples with negatives."""

import tempfile
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from recsys_dagster.assets.common import config_from, md_kv, to_plain
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.jobs.partitions import TRAINING_WINDOW, TRAINING_WINDOW_DAYS, WEEKLY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.spark import SparkResource
from recsys_dagster.spark.examples import ExampleConfig, read_summary, write_summary
from recsys_dagster.spark.training import training_partition

# The window is project-wide (it shapes the partition mapping), so it is no run config.
TrainingExamplesConfig = config_from(ExampleConfig, exclude=("window_days", "weights"))


@asset(
    partitions_def=WEEKLY,
    deps=[
        AssetDep("sessions", partition_mapping=TRAINING_WINDOW),
        AssetDep("catalog", partition_mapping=TRAINING_WINDOW),
    ],
    group_name="training",
    kinds={"spark", "parquet"},
    description="For the week: the last N days of sessions as (history before t, positive, weight, "
    "negatives), split by time into train / validation / test. Negatives mix popularity-weighted, "
    "uniform and same-category hard ones, never one of the user's positives.",
)
def training_examples(
    context: AssetExecutionContext, config: TrainingExamplesConfig, lake: LakeResource, spark: SparkResource
) -> MaterializeResult:
    week = context.partition_key
    the_lake = lake.get_lake()
    cfg = to_plain(config, ExampleConfig, window_days=TRAINING_WINDOW_DAYS)
    with tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        s = training_partition(spark.get_session(), the_lake, week, cfg, staging_dir=Path(tmp))
    write_summary(the_lake, s, cfg)
    meta = {
        "path": MetadataValue.path(f"{the_lake.uri}/{week_prefix(TRAINING, week)}"),
        "dagster/row_count": int(sum(s.counts.values())),
        "train_rows": int(s.counts["train"]),
        "validation_rows": int(s.counts["validation"]),
        "test_rows": int(s.counts["test"]),
        "users": s.users,
        "items": s.items,
        "active_items": s.active_items,
        "window_days_present": len(s.window_days_present),
        "splits": md_kv({k: f"{v[0]} … {v[1]}" for k, v in s.split_ranges.items()}, "split", "days"),
        "negative_mix": md_kv(s.negative_mix, "kind", "negatives"),
    }
    for kind, n in s.negative_mix.items():
        meta[f"negatives_{kind}"] = int(n)
    return MaterializeResult(metadata=meta)


def _check_result(outcome, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    return AssetCheckResult(
        passed=bool(outcome.passed),
        severity=severity,
        description=outcome.description,
        metadata=dict(outcome.metadata),
    )


def _read(lake: LakeResource, spark: SparkResource, week: str, tmp: Path, names: tuple[str, ...]) -> dict:
    from recsys_dagster.spark.io import read_lake_parquet

    session = spark.get_session()
    base = week_prefix(TRAINING, week)
    out = {}
    for name in names:
        df = read_lake_parquet(session, lake.get_lake(), [f"{base}/{name}"], tmp / name)
        if df is None:
            raise RuntimeError(f"training output {name!r} of week {week} is missing")
        out[name] = df
    return out


SPLIT_NAMES = ("train", "validation", "test")


@asset_check(
    asset="training_examples",
    blocking=True,
    partitions_def=WEEKLY,
    description="No example's target or history comes from a later split.",
)
def training_examples_no_leakage(
    context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource
) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_no_leakage

    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        s = _read(lake, spark, context.partition_key, Path(tmp), SPLIT_NAMES)
        return _check_result(check_no_leakage(s["train"], s["validation"], s["test"]))


@asset_check(
    asset="training_examples",
    blocking=True,
    partitions_def=WEEKLY,
    description="No negative is one of the user's positives in the window, nor the row's positive.",
)
def training_examples_negatives_disjoint(
    context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource
) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_negatives_disjoint

    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        s = _read(lake, spark, context.partition_key, Path(tmp), SPLIT_NAMES)
        examples = s["train"].unionByName(s["validation"]).unionByName(s["test"])
        return _check_result(check_negatives_disjoint(examples))


@asset_check(
    asset="training_examples",
    blocking=True,
    partitions_def=WEEKLY,
    description="The written splits are non-empty and every row has exactly K negatives.",
)
def training_examples_counts(
    context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource
) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_counts
    from recsys_dagster.spark.training import count_examples

    week = context.partition_key
    _, cfg = read_summary(lake.get_lake(), week)
    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        # Recounted from the lake with the function that counted while writing, so a lost
        # or truncated file shows here.
        s = _read(lake, spark, week, Path(tmp), (*SPLIT_NAMES, "items"))
        examples = s["train"].unionByName(s["validation"]).unionByName(s["test"])
        counts = count_examples(examples, s["items"], cfg)
    # The mix has its own (warning) check: a small catalog legitimately tops up hard negatives.
    return _check_result(check_counts(counts, cfg, tolerance=1.0))


@asset_check(
    asset="training_examples",
    partitions_def=WEEKLY,
    description="The popular/uniform/hard negative mix is within 10 points of the configured one.",
)
def training_examples_negative_mix(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_counts

    # The mix the sampler produced, as counted when the examples were written.
    summary, cfg = read_summary(lake.get_lake(), context.partition_key)
    return _check_result(check_counts(summary, cfg), severity=AssetCheckSeverity.WARN)


TRAINING_CHECKS = [
    training_examples_no_leakage,
    training_examples_negatives_disjoint,
    training_examples_counts,
    training_examples_negative_mix,
]
