"""The daily job (ingest + sessions), its schedule, and the landing sensor."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetMaterialization,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from recsys_dagster.contract import LANDING_CATALOG, LANDING_EVENTS
from recsys_dagster.ingest.pipeline import catalog_snapshot_day, has_landed
from recsys_dagster.jobs.partitions import DAILY
from recsys_dagster.resources.lake import LakeResource

daily_job = define_asset_job(
    "daily_ingest",
    selection=AssetSelection.assets("catalog", "events", "sessions"),
    partitions_def=DAILY,
    description="Validate the day's landing files into catalog and events, then sessionize.",
)


def day_ready(lake, dt: str) -> bool:
    """The day's events landed (files, possibly empty ones) and a catalog snapshot landed
    on or before it."""
    return has_landed(lake, LANDING_EVENTS, dt) and catalog_snapshot_day(lake, dt) is not None


# 02:00 UTC for yesterday's partition (the last complete one), once it has landed: a day
# that has not landed yet is skipped, with the reason, instead of a run that fails.
@schedule(
    name="daily_ingest_schedule",
    job=daily_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
)
def daily_schedule(context: ScheduleEvaluationContext, lake: LakeResource):
    tick = context.scheduled_execution_time or datetime.now(UTC)
    dt = (tick.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    if dt not in set(DAILY.get_partition_keys()):
        return SkipReason(f"{dt} is not a daily partition (the partitions start {DAILY.start.date()})")
    if not day_ready(lake.get_lake(), dt):
        return SkipReason(f"{dt} has not landed yet (no events under {LANDING_EVENTS}/dt={dt}, or no catalog)")
    return RunRequest(partition_key=dt, run_key=f"schedule-{dt}")


@sensor(job=daily_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource):
    """Notices a day whose events have landed (with a catalog snapshot on or before it),
    records it on the external assets, and requests the daily run for it. The cursor
    remembers each day's file list, so a day that lands more files later is run again
    (re-runs replace, never duplicate)."""
    the_lake = lake.get_lake()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(DAILY.get_partition_keys())
    landed = sorted(set(the_lake.list_partitions(LANDING_EVENTS)) | set(the_lake.list_partitions(LANDING_CATALOG)))
    requests, events = [], []
    for dt in landed:
        if dt not in valid_keys or not day_ready(the_lake, dt):
            continue
        files = the_lake.list_keys(f"{LANDING_EVENTS}/dt={dt}") + the_lake.list_keys(f"{LANDING_CATALOG}/dt={dt}")
        signature = hashlib.sha1("|".join(files).encode()).hexdigest()[:12]
        if seen.get(dt) == signature:
            continue
        seen[dt] = signature
        requests.append(RunRequest(partition_key=dt, run_key=f"landing-{dt}-{signature}"))
        for asset_key, prefix in (("raw_events", LANDING_EVENTS), ("raw_catalog", LANDING_CATALOG)):
            if not has_landed(the_lake, prefix, dt):
                continue  # the catalog may land once and carry forward
            events.append(
                AssetMaterialization(
                    asset_key=asset_key,
                    partition=dt,
                    metadata={
                        "files": len(the_lake.list_keys(f"{prefix}/dt={dt}")),
                        "path": f"{the_lake.uri}/{prefix}/dt={dt}",
                    },
                )
            )
    if not requests:
        return SkipReason(f"no new landing partitions ({len(landed)} known)")
    return SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(seen, sort_keys=True))
