"""Dagster asset checks over the Great Expectations suites and the pipeline's invariants.

Blocking checks guard what comes after: a failed `events` suite stops `sessions` in the
same run, a leaking training split stops training, and so on.
"""

from collections.abc import Callable

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from recsys_dagster.contract import CATALOG, EVENTS, QUARANTINE_EVENTS, SESSIONS, day_prefix
from recsys_dagster.jobs.partitions import DAILY
from recsys_dagster.lake import Lake
from recsys_dagster.resources.lake import LakeResource

# Above this share of quarantined lines the day is suspicious (a producer bug), not fatal.
QUARANTINE_WARN_RATE = 0.05


def gx_check_result(lake: Lake, asset: str, days: list[str], dataset: str) -> AssetCheckResult:
    """Run the asset's GX suite on each day of the run and turn the outcome into one check
    result (a single-run backfill checks every day it wrote; one bad day fails it)."""
    from recsys_dagster.checks.suites import run_suite, save_result

    rows = evaluated = 0
    failed: list[tuple[str, str]] = []  # (day, markdown of what failed)
    failed_rows = failed_expectations = 0
    paths = []
    for dt in days:
        prefix = day_prefix(dataset, dt)
        if not lake.has_data(prefix):
            failed.append((dt, f"no data at {lake.uri}/{prefix}"))
            failed_expectations += 1
            continue
        df = lake.read_parquet(prefix).to_pandas()
        result = run_suite(asset, df)
        paths.append(save_result(lake, asset, dt, result))
        rows += len(df)
        evaluated += result.evaluated
        if not result.success:
            failed.append((dt, result.markdown()))
            failed_expectations += len(result.failed)
            failed_rows += sum(int(f.get("unexpected_count") or 0) for f in result.failed)
    report = "\n\n".join(f"**{dt}**\n\n{md}" for dt, md in failed) or "all expectations passed"
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description=f"Great Expectations suite `{asset}` on {days[0]}" + (f" … {days[-1]}" if len(days) > 1 else ""),
        metadata={
            "partitions": len(days),
            "failed_partitions": ", ".join(dt for dt, _ in failed) or "none",
            "rows": rows,
            "expectations_evaluated": evaluated,
            "expectations_failed": failed_expectations,
            "failed_rows": failed_rows,
            "failed_expectations": MetadataValue.md(report),
            "result_path": MetadataValue.path(f"{lake.uri}/{paths[-1]}") if paths else "none",
        },
    )


def _suite_check(asset: str, dataset: str) -> AssetChecksDefinition:
    @asset_check(
        asset=asset,
        name=f"{asset}_expectations",
        blocking=True,
        partitions_def=DAILY,
        description=f"Great Expectations suite for `{asset}` (blocking: downstream waits for it).",
    )
    def _check(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        return gx_check_result(lake.get_lake(), asset, sorted(context.partition_keys), dataset)

    return _check


events_expectations = _suite_check("events", EVENTS)
catalog_expectations = _suite_check("catalog", CATALOG)
sessions_expectations = _suite_check("sessions", SESSIONS)


@asset_check(
    asset="events",
    name="events_quarantine_rate",
    partitions_def=DAILY,
    description=f"Warns when more than {QUARANTINE_WARN_RATE:.0%} of a day's lines were quarantined.",
)
def events_quarantine_rate(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    the_lake = lake.get_lake()
    valid = quarantined = 0
    for dt in context.partition_keys:
        valid += the_lake.read_parquet(day_prefix(EVENTS, dt), columns=["event_id"]).num_rows
        q_prefix = day_prefix(QUARANTINE_EVENTS, dt)
        quarantined += (
            the_lake.read_parquet(q_prefix, columns=["reason"]).num_rows if the_lake.has_data(q_prefix) else 0
        )
    rate = quarantined / max(1, valid + quarantined)
    return AssetCheckResult(
        passed=rate <= QUARANTINE_WARN_RATE,
        severity=AssetCheckSeverity.WARN,
        metadata={"quarantine_rate": round(rate, 6), "quarantined": quarantined, "valid": valid},
    )


DAILY_CHECKS: list[Callable] = [
    events_expectations,
    catalog_expectations,
    sessions_expectations,
    events_quarantine_rate,
]
