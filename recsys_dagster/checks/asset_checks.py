"""Dagster asset checks over the Great Expectations suites and the pipeline's invariants.

Blocking checks guard what comes after: a failed `events` suite stops `sessions` in the
same run, a leaking training split stops training, and so on.
"""

from collections.abc import Callable
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
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


def _why_empty_is_right(lake: Lake, dataset: str, dt: str) -> str | None:
    """Why an empty table is right for the day, or None when it means a failed ingest.
    Events: nothing landed (no event kept and none quarantined). Sessions: always, since a
    day's sessions are those that close on it, and sparse days legitimately close none."""
    if dataset == EVENTS:
        q = day_prefix(QUARANTINE_EVENTS, dt)
        quarantined = lake.read_parquet(q, columns=["reason"]).num_rows if lake.has_data(q) else 0
        return "empty day: no event landed" if quarantined == 0 else None
    if dataset == SESSIONS:
        return "no session closed on this day"
    return None


@dataclass(frozen=True)
class DayOutcome:
    dt: str
    passed: bool
    rows: int
    evaluated: int
    failed_expectations: int
    failed_rows: int
    report: str  # markdown of what failed, or why the suite was not needed
    result_path: str | None


def suite_on_day(lake: Lake, asset: str, dataset: str, dt: str) -> DayOutcome:
    """The asset's GX suite on one day's partition (its result saved under quality/)."""
    from recsys_dagster.checks.suites import run_suite, save_result

    prefix = day_prefix(dataset, dt)
    if not lake.has_data(prefix):
        return DayOutcome(dt, False, 0, 0, 1, 0, f"no data at {lake.uri}/{prefix}", None)
    df = lake.read_parquet(prefix).to_pandas()
    why = _why_empty_is_right(lake, dataset, dt) if len(df) == 0 else None
    if why is not None:
        return DayOutcome(dt, True, 0, 0, 0, 0, why, None)
    result = run_suite(asset, df)
    path = save_result(lake, asset, dt, result)
    failed_rows = sum(int(f.get("unexpected_count") or 0) for f in result.failed)
    report = "" if result.success else result.markdown()
    return DayOutcome(dt, result.success, len(df), result.evaluated, len(result.failed), failed_rows, report, path)


def _day_metadata(lake: Lake, day: DayOutcome) -> dict:
    return {
        "rows": day.rows,
        "expectations_evaluated": day.evaluated,
        "expectations_failed": day.failed_expectations,
        "failed_rows": day.failed_rows,
        "failed_expectations": MetadataValue.md(day.report or "all expectations passed"),
        "result_path": MetadataValue.path(f"{lake.uri}/{day.result_path}") if day.result_path else "none",
    }


def log_day_evaluation(
    context: AssetCheckExecutionContext, dt: str, passed: bool, metadata: dict, severity: AssetCheckSeverity
) -> None:
    """Record one day's result of the running check as that day's evaluation. In a range
    run Dagster records the step's result without a partition, and the gate reads checks
    per partition."""
    spec = context.check_specs[0]
    context.op_execution_context.log_event(
        AssetCheckEvaluation(
            asset_key=spec.key.asset_key,
            check_name=spec.key.name,
            passed=passed,
            metadata=metadata,
            severity=severity,
            blocking=spec.blocking,
            partition=dt,
        )
    )


def gx_check_result(
    lake: Lake, asset: str, days: list[str], dataset: str, context: AssetCheckExecutionContext | None = None
) -> AssetCheckResult:
    """Run the asset's GX suite on each day of the run and turn the outcome into one check
    result (a single-run backfill checks every day it wrote; one bad day fails it).

    In a range run Dagster records the step's result without a partition, so each day's
    result is also logged as that day's evaluation: the gate reads checks per partition."""
    outcomes = [suite_on_day(lake, asset, dataset, dt) for dt in days]
    if context is not None and len(days) > 1:
        for day in outcomes:
            log_day_evaluation(context, day.dt, day.passed, _day_metadata(lake, day), AssetCheckSeverity.ERROR)
    failed = [d for d in outcomes if not d.passed]
    report = "\n\n".join(f"**{d.dt}**\n\n{d.report}" for d in failed) or "all expectations passed"
    paths = [d.result_path for d in outcomes if d.result_path]
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description=f"Great Expectations suite `{asset}` on {days[0]}" + (f" … {days[-1]}" if len(days) > 1 else ""),
        metadata={
            "partitions": len(days),
            "failed_partitions": ", ".join(d.dt for d in failed) or "none",
            "empty_days": sum(d.rows == 0 and d.passed for d in outcomes),
            "rows": sum(d.rows for d in outcomes),
            "expectations_evaluated": sum(d.evaluated for d in outcomes),
            "expectations_failed": sum(d.failed_expectations for d in outcomes),
            "failed_rows": sum(d.failed_rows for d in outcomes),
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
        return gx_check_result(lake.get_lake(), asset, sorted(context.partition_keys), dataset, context)

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
    days = sorted(context.partition_keys)
    rates: dict[str, tuple[int, int, float]] = {}  # day -> (valid, quarantined, rate)
    for dt in days:
        valid = the_lake.read_parquet(day_prefix(EVENTS, dt), columns=["event_id"]).num_rows
        q_prefix = day_prefix(QUARANTINE_EVENTS, dt)
        quarantined = the_lake.read_parquet(q_prefix, columns=["reason"]).num_rows if the_lake.has_data(q_prefix) else 0
        rates[dt] = (valid, quarantined, quarantined / max(1, valid + quarantined))
    # Per day, so one bad day of a long range is not diluted; in a range run each day's
    # result is also logged as that day's evaluation.
    if len(days) > 1:
        for dt, (valid, quarantined, rate) in rates.items():
            meta = {"quarantine_rate": round(rate, 6), "quarantined": quarantined, "valid": valid}
            log_day_evaluation(context, dt, rate <= QUARANTINE_WARN_RATE, meta, AssetCheckSeverity.WARN)
    worst = max(rates, key=lambda d: rates[d][2])
    over = [d for d, (_, _, rate) in rates.items() if rate > QUARANTINE_WARN_RATE]
    return AssetCheckResult(
        passed=not over,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "quarantine_rate": round(rates[worst][2], 6),  # the worst day's
            "worst_day": worst,
            "days_over_threshold": ", ".join(over) or "none",
            "quarantined": sum(q for _, q, _ in rates.values()),
            "valid": sum(v for v, _, _ in rates.values()),
        },
    )


DAILY_CHECKS: list[Callable] = [
    events_expectations,
    catalog_expectations,
    sessions_expectations,
    events_quarantine_rate,
]
