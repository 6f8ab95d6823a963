"""The promotion gate as a singleton asset over the latest weekly partition."""

import tempfile
from datetime import date, timedelta
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetDep,
    AssetExecutionContext,
    DagsterInstance,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_dagster.assets.common import config_from, to_plain
from recsys_dagster.assets.index import INDEX_CHECKS
from recsys_dagster.assets.ranker import RANKER_CHECKS
from recsys_dagster.assets.training import TRAINING_CHECKS
from recsys_dagster.bundle.gate import GateConfig
from recsys_dagster.checks.asset_checks import sessions_expectations
from recsys_dagster.contract import EVALUATION, SESSIONS
from recsys_dagster.jobs.partitions import DAILY, TRAINING_WINDOW_DAYS
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

# The index floor is shared with the blocking index check, so it is no per-run knob.
GateSettings = config_from(GateConfig, exclude=("min_index_recall",))


def blocking_check_keys(checks) -> list[AssetCheckKey]:
    """The keys of the blocking checks among `checks` (asset check definitions)."""
    return [spec.key for c in checks for spec in c.check_specs if spec.blocking]


# Derived from the definitions, so a new blocking check guards the gate without retyping.
WEEKLY_CHECKS = blocking_check_keys([*TRAINING_CHECKS, *INDEX_CHECKS, *RANKER_CHECKS])
DAILY_GATE_CHECKS = blocking_check_keys([sessions_expectations])


def latest_check_passed(instance: DagsterInstance, key: AssetCheckKey, partition: str) -> bool:
    """Whether the latest execution of check `key` for `partition` succeeded.

    Dagster has no public API for per-partition check records yet; this uses its internal
    one, and tests/test_definitions.py fails loudly if an upgrade moves it."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=partition)
    )
    record = records.get(key)
    return record is not None and record.status == AssetCheckExecutionRecordStatus.SUCCEEDED


def upstream_checks(
    instance: DagsterInstance,
    lake,
    week: str,
    window_days: int = TRAINING_WINDOW_DAYS,
    first_day: str = DAILY.get_first_partition_key(),
) -> dict[str, bool]:
    """Latest result of every blocking check behind the week's candidate: the weekly ones
    and the sessions suite of each day of the training window (from the first daily
    partition on). Empty days have partitions too, so a window day without sessions was
    never ingested: it counts as a failed `sessions_ingested[day]`, not as a day to skip."""
    wanted = [(key, week) for key in WEEKLY_CHECKS]
    out: dict[str, bool] = {}
    sunday = date.fromisoformat(week) + timedelta(days=6)
    present = set(lake.list_partitions(SESSIONS))
    for i in range(window_days):
        day = (sunday - timedelta(days=i)).isoformat()
        if day < first_day:
            continue
        if day in present:
            wanted += [(key, day) for key in DAILY_GATE_CHECKS]
        else:
            out[f"sessions_ingested[{day}]"] = False
    out.update({f"{key.name}[{p}]": latest_check_passed(instance, key, p) for key, p in wanted})
    return out


@asset(
    deps=[AssetDep("model_evaluation", partition_mapping=LastPartitionMapping())],
    group_name="deployment",
    kinds={"python"},
    # One promotion at a time across runs: the pointer flip and its audit log are serial.
    pool="promotion",
    description="The promotion gate. Gates the week of the run (or the latest evaluated week): upstream "
    "checks, enough test users, a significant win over the strongest baseline and no significant regression "
    "vs the champion (paired bootstraps over users), index recall, and a serving load test of the bundle. "
    "On pass writes and verifies models/<version>/, flips promoted/manifest.json and moves the MLflow "
    "`champion` alias; otherwise production is untouched and the reasons are recorded.",
)
def deployment(
    context: AssetExecutionContext, config: GateSettings, lake: LakeResource, mlflow: MlflowResource
) -> MaterializeResult:
    from recsys_dagster.bundle.release import release
    from recsys_dagster.ml.tracking import set_champion_alias

    the_lake = lake.get_lake()
    week = context.run.tags.get("dagster/partition") or _latest_evaluated_week(the_lake)
    if week is None:
        raise ValueError("no evaluated week to gate: materialize model_evaluation first")
    checks = upstream_checks(context.instance, the_lake, week)
    with tempfile.TemporaryDirectory(prefix="recsys-release-") as tmp:
        outcome = release(
            the_lake,
            week,
            checks_passed=checks,
            cfg=to_plain(config, GateConfig),
            workdir=Path(tmp),
            actor=f"dagster:{context.run_id[:8]}",
        )

    meta: dict = {
        "week": week,
        "promoted": outcome.promoted,
        "decision": MetadataValue.md(outcome.decision.markdown()),
        "test_users": outcome.test_users,
        "upstream_checks_passed": sum(checks.values()),
        "upstream_checks_total": len(checks),
        "serving_p95_ms": float(outcome.infra.p95_ms or 0.0),
    }
    if outcome.promoted:
        set_champion_alias(mlflow.store(), outcome.mlflow_model_version)
        meta["version"] = outcome.version
        meta["mlflow_champion"] = f"{mlflow.registered_model} v{outcome.mlflow_model_version}"
        context.log.info(f"promoted {outcome.version}")
    else:
        meta["reasons"] = MetadataValue.md("\n".join(f"- {r}" for r in outcome.decision.reasons))
        context.log.warning(f"week {week} not promoted: {outcome.decision.reasons}")
    return MaterializeResult(metadata=meta)


def _latest_evaluated_week(lake) -> str | None:
    weeks = lake.list_partitions(EVALUATION, key="week")
    return weeks[-1] if weeks else None
