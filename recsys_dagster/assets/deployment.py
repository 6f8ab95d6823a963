"""The promotion gate as a singleton asset over the latest weekly partition."""

import tempfile
from datetime import date, timedelta
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetDep,
    AssetExecutionContext,
    Config,
    DagsterInstance,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_dagster import settings
from recsys_dagster.bundle.format import MANIFEST, bundle_prefix
from recsys_dagster.contract import EVALUATION, SESSIONS
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

WEEKLY_CHECKS = (
    ("training_examples", "training_examples_no_leakage"),
    ("training_examples", "training_examples_negatives_disjoint"),
    ("training_examples", "training_examples_counts"),
    ("item_embeddings", "item_embeddings_valid"),
    ("faiss_index", "faiss_index_recall"),
)


class GateSettings(Config):
    baseline_margin: float = 0.10
    champion_tolerance: float = 0.01
    min_index_recall: float = 0.95
    latency_budget_ms: float = 50.0


def upstream_checks(instance: DagsterInstance, lake, week: str) -> dict[str, bool]:
    """Latest result of every blocking check behind the week's candidate: the weekly ones
    and the sessions suite of each day in the training window that has data."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    wanted = [(AssetCheckKey(asset_key=AssetKey(a), name=c), week) for a, c in WEEKLY_CHECKS]
    sunday = date.fromisoformat(week) + timedelta(days=6)
    present = set(lake.list_partitions(SESSIONS))
    for i in range(settings.training_window_days()):
        day = (sunday - timedelta(days=i)).isoformat()
        if day in present:
            wanted.append((AssetCheckKey(asset_key=AssetKey("sessions"), name="sessions_expectations"), day))
    out: dict[str, bool] = {}
    for key, partition in wanted:
        records = instance.event_log_storage.get_latest_asset_check_execution_by_key([key], partition_filter=PartitionKeyFilter(key=partition))
        record = records.get(key)
        out[f"{key.name}[{partition}]"] = record is not None and record.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    return out


@asset(
    deps=[AssetDep("model_evaluation", partition_mapping=LastPartitionMapping())],
    group_name="deployment",
    kinds={"python"},
    # One promotion at a time across runs: the pointer flip and its audit log are serial.
    pool="promotion",
    description="The promotion gate. Gates the week of the run (or the latest evaluated week): upstream "
    "checks, margin over popularity, no significant regression vs the champion (paired bootstrap), index "
    "recall, and a serving load test of the bundle. On pass writes and verifies models/<version>/, flips "
    "promoted/manifest.json and moves the MLflow `champion` alias; otherwise production is untouched and "
    "the reasons are recorded.",
)
def deployment(context: AssetExecutionContext, config: GateSettings, lake: LakeResource, mlflow: MlflowResource) -> MaterializeResult:
    from recsys_dagster.bundle.gate import GateConfig
    from recsys_dagster.bundle.release import release

    the_lake = lake.get_lake()
    week = context.run.tags.get("dagster/partition") or _latest_evaluated_week(the_lake)
    if week is None:
        raise ValueError("no evaluated week to gate: materialize model_evaluation first")
    checks = upstream_checks(context.instance, the_lake, week)
    cfg = GateConfig(
        baseline_margin=config.baseline_margin,
        champion_tolerance=config.champion_tolerance,
        min_index_recall=config.min_index_recall,
        latency_budget_ms=config.latency_budget_ms,
    )
    with tempfile.TemporaryDirectory(prefix="recsys-release-") as tmp:
        outcome = release(the_lake, week, checks_passed=checks, cfg=cfg, workdir=Path(tmp), actor=f"dagster:{context.run_id[:8]}")

    meta: dict = {
        "week": week,
        "promoted": outcome["promoted"],
        "decision": MetadataValue.md(outcome["markdown"]),
        "upstream_checks_passed": sum(checks.values()),
        "upstream_checks_total": len(checks),
        "serving_p95_ms": float(outcome["infra"].get("p95_ms") or 0.0),
    }
    if outcome["promoted"]:
        from recsys_dagster.ml.tracking import set_champion_alias

        mlflow.activate()
        version = outcome["version"]
        metrics = the_lake.read_json(f"{bundle_prefix(version)}/{MANIFEST}")
        set_champion_alias(mlflow.registered_model, metrics["mlflow_model_version"])
        meta["version"] = version
        meta["mlflow_champion"] = f"{mlflow.registered_model} v{metrics['mlflow_model_version']}"
        context.log.info(f"promoted {version}")
    else:
        meta["reasons"] = MetadataValue.md("\n".join(f"- {r}" for r in outcome["decision"]["reasons"]))
        context.log.warning(f"week {week} not promoted: {outcome['decision']['reasons']}")
    return MaterializeResult(metadata=meta)


def _latest_evaluated_week(lake) -> str | None:
    weeks = lake.list_partitions(EVALUATION, key="week")
    return weeks[-1] if weeks else None
