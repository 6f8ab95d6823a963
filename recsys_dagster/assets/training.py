"""Weekly training examples: a rolling window of sessions -> time-split examples with negatives."""


import tempfile
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from recsys_dagster import settings
from recsys_dagster.assets.common import md_kv
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY, training_window_mapping
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.spark import SparkResource
from recsys_dagster.spark.training import ExampleConfig, training_partition


class TrainingExamplesConfig(Config):
    history_len: int = 20
    negatives: int = 8
    mix_popular: float = 0.5
    mix_uniform: float = 0.25
    mix_hard: float = 0.25
    popularity_alpha: float = 0.75
    validation_days: int = 2
    test_days: int = 2
    window_days: int = settings.training_window_days()
    seed: int = 13

    def to_example_config(self) -> ExampleConfig:
        return ExampleConfig(
            history_len=self.history_len,
            negatives=self.negatives,
            mix=(self.mix_popular, self.mix_uniform, self.mix_hard),
            popularity_alpha=self.popularity_alpha,
            validation_days=self.validation_days,
            test_days=self.test_days,
            window_days=self.window_days,
            seed=self.seed,
        )


_window = training_window_mapping()


@asset(
    partitions_def=WEEKLY,
    deps=[AssetDep("sessions", partition_mapping=_window), AssetDep("catalog", partition_mapping=_window)],
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
    with tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        s = training_partition(spark.get_session(), the_lake, week, config.to_example_config(), staging_dir=Path(tmp))
    # The checks read the config the examples were built with, not the defaults.
    the_lake.write_json(f"{week_prefix(TRAINING, week)}/summary.json", {"summary": s, "config": config.model_dump()})
    counts = s["counts"]
    meta = {
        "path": MetadataValue.path(f"{the_lake.uri}/{week_prefix(TRAINING, week)}"),
        "dagster/row_count": int(sum(counts[k] for k in ("train", "validation", "test"))),
        "train_rows": int(counts["train"]),
        "validation_rows": int(counts["validation"]),
        "test_rows": int(counts["test"]),
        "users": int(s["users"]),
        "items": int(s["items"]),
        "active_items": int(s.get("active_items", 0)),
        "window_days_present": len(s["window_days_present"]),
        "splits": md_kv({k: f"{v[0]} … {v[1]}" for k, v in s["split_ranges"].items()}, "split", "days"),
        "negative_mix": md_kv(s["negative_mix"], "kind", "negatives"),
    }
    for kind, n in s["negative_mix"].items():
        meta[f"negatives_{kind}"] = int(n)
    return MaterializeResult(metadata=meta)


def _check_result(outcome) -> AssetCheckResult:
    return AssetCheckResult(
        passed=bool(outcome.passed),
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=dict(outcome.metadata),
    )


def _read_splits(lake: LakeResource, spark: SparkResource, week: str, tmp: Path) -> dict:
    from recsys_dagster.spark.io import read_lake_parquet

    session = spark.get_session()
    base = week_prefix(TRAINING, week)
    out = {}
    for name in ("train", "validation", "test"):
        df = read_lake_parquet(session, lake.get_lake(), [f"{base}/{name}"], tmp / name)
        if df is None:
            raise RuntimeError(f"training split {name!r} of week {week} is missing")
        out[name] = df
    return out


@asset_check(asset="training_examples", blocking=True, partitions_def=WEEKLY, description="No example's target or history comes from a later split.")
def training_examples_no_leakage(context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_no_leakage

    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        s = _read_splits(lake, spark, context.partition_key, Path(tmp))
        return _check_result(check_no_leakage(s["train"], s["validation"], s["test"]))


@asset_check(asset="training_examples", blocking=True, partitions_def=WEEKLY, description="No negative is one of the user's positives in the window, nor the row's positive.")
def training_examples_negatives_disjoint(context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_negatives_disjoint

    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        s = _read_splits(lake, spark, context.partition_key, Path(tmp))
        examples = s["train"].unionByName(s["validation"]).unionByName(s["test"])
        return _check_result(check_negatives_disjoint(examples))


def _counts(lake: LakeResource, spark: SparkResource, week: str, tmp: Path) -> tuple[dict, ExampleConfig]:
    from pyspark.sql import functions as F

    saved = lake.get_lake().read_json(f"{week_prefix(TRAINING, week)}/summary.json")
    cfg = TrainingExamplesConfig(**saved["config"]).to_example_config()
    s = _read_splits(lake, spark, week, tmp)
    counts: dict = {name: df.count() for name, df in s.items()}
    allx = s["train"].unionByName(s["validation"]).unionByName(s["test"])
    counts["bad_negative_rows"] = allx.filter(F.size("negatives") != cfg.negatives).count()
    mix = allx.select(F.explode("negative_kinds").alias("k")).groupBy("k").count().collect()
    counts["negative_mix"] = {r["k"]: int(r["count"]) for r in mix}
    return counts, cfg


@asset_check(asset="training_examples", blocking=True, partitions_def=WEEKLY, description="Splits are non-empty and every row has exactly K negatives.")
def training_examples_counts(context: AssetCheckExecutionContext, lake: LakeResource, spark: SparkResource) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_counts

    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        counts, cfg = _counts(lake, spark, context.partition_key, Path(tmp))
    # The mix has its own (warning) check: a small catalog legitimately tops up hard negatives.
    return _check_result(check_counts(counts, cfg, tolerance=1.0))


@asset_check(asset="training_examples", partitions_def=WEEKLY, description="The popular/uniform/hard negative mix is within 10 points of the configured one.")
def training_examples_negative_mix(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    from recsys_dagster.spark.leakage import check_counts

    # The mix the sampler produced was counted when the examples were written; the
    # blocking counts check above re-reads the data itself.
    saved = lake.get_lake().read_json(f"{week_prefix(TRAINING, context.partition_key)}/summary.json")
    cfg = TrainingExamplesConfig(**saved["config"]).to_example_config()
    outcome = check_counts(saved["summary"], cfg)
    return AssetCheckResult(passed=bool(outcome.passed), severity=AssetCheckSeverity.WARN, description=outcome.description, metadata=dict(outcome.metadata))


TRAINING_CHECKS = [
    training_examples_no_leakage,
    training_examples_negatives_disjoint,
    training_examples_counts,
    training_examples_negative_mix,
]
