"""Spark sessionization of each day's events."""

from dagster import AssetDep, AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import config_from, md_kv, md_table
from recsys_dagster.contract import SESSIONS, day_prefix
from recsys_dagster.jobs.partitions import DAILY, PREVIOUS_AND_SAME_DAY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.spark import SparkResource
from recsys_dagster.spark.sessionize import SessionizeConfig, SessionsSummary, sessionize_partition

SessionsConfig = config_from(SessionizeConfig)


@asset(
    partitions_def=DAILY,
    deps=[AssetDep("events", partition_mapping=PREVIOUS_AND_SAME_DAY)],
    group_name="sessions",
    kinds={"spark", "parquet"},
    backfill_policy=BackfillPolicy.single_run(),
    description="Sessions that close on the day (inactivity gap, default 30 min), ordered by event time. "
    "Reads the previous day too, so a session that crosses midnight stays whole.",
)
def sessions(
    context: AssetExecutionContext, config: SessionsConfig, lake: LakeResource, spark: SparkResource
) -> MaterializeResult:
    days = sorted(context.partition_keys)
    the_lake = lake.get_lake()
    session = spark.get_session()
    # In order: day D reads the events of D-1 and D, never another day's sessions.
    results = [sessionize_partition(session, the_lake, dt, gap_minutes=config.gap_minutes) for dt in days]
    last = results[-1]
    meta = {
        "path": MetadataValue.path(f"{the_lake.uri}/{day_prefix(SESSIONS, days[-1])}"),
        "dagster/row_count": sum(int(r.sessions) for r in results),
        "events": sum(int(r.events) for r in results),
        "users": int(last.users) if len(days) == 1 else max(int(r.users) for r in results),
        "session_length_distribution": md_kv(_sum_histograms(results), "events per session", "sessions"),
        "gap_minutes": config.gap_minutes,
        "preview": md_table(last.preview),
        "empty_days": sum(r.sessions == 0 for r in results),
    }
    if last.duration_p50_s is not None:  # an empty day has no durations
        meta["duration_p50_s"] = float(last.duration_p50_s)
        meta["duration_p95_s"] = float(last.duration_p95_s)
    if len(days) > 1:
        meta["days"] = len(days)
        meta["per_day"] = md_table(
            [{"dt": d, "sessions": r.sessions, "events": r.events} for d, r in zip(days, results)], max_rows=400
        )
    return MaterializeResult(metadata=meta)


def _sum_histograms(results: list[SessionsSummary]) -> dict:
    total: dict[str, int] = {}
    for r in results:
        for bucket, n in r.length_histogram.items():
            total[bucket] = total.get(bucket, 0) + int(n)
    return total
