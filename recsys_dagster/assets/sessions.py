"""Spark sessionization of each day's events."""


from dagster import AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import md_kv, md_table
from recsys_dagster.contract import SESSIONS, day_prefix
from recsys_dagster.jobs.partitions import DAILY, PREVIOUS_AND_SAME_DAY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.spark import SparkResource
from recsys_dagster.spark.sessionize import sessionize_partition


class SessionsConfig(Config):
    gap_minutes: int = 30


@asset(
    partitions_def=DAILY,
    deps=[AssetDep("events", partition_mapping=PREVIOUS_AND_SAME_DAY)],
    group_name="sessions",
    kinds={"spark", "parquet"},
    description="Sessions that close on the day (inactivity gap, default 30 min), ordered by event time. "
    "Reads the previous day too, so a session that crosses midnight stays whole.",
)
def sessions(context: AssetExecutionContext, config: SessionsConfig, lake: LakeResource, spark: SparkResource) -> MaterializeResult:
    dt = context.partition_key
    the_lake = lake.get_lake()
    s = sessionize_partition(spark.get_session(), the_lake, dt, gap_minutes=config.gap_minutes)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(f"{the_lake.uri}/{day_prefix(SESSIONS, dt)}"),
            "dagster/row_count": int(s["sessions"]),
            "events": int(s["events"]),
            "users": int(s["users"]),
            "duration_p50_s": float(s["duration_p50_s"]),
            "duration_p95_s": float(s["duration_p95_s"]),
            "session_length_distribution": md_kv(s["length_histogram"], "events per session", "sessions"),
            "gap_minutes": config.gap_minutes,
            "preview": md_table(s.get("preview", [])),
        }
    )
