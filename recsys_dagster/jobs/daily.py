"""The daily job (ingest + sessions), its schedule, and the landing sensor."""

import hashlib
import json

from dagster import (
    AssetMaterialization,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    sensor,
)

from recsys_dagster.contract import LANDING_CATALOG, LANDING_EVENTS
from recsys_dagster.jobs.partitions import DAILY
from recsys_dagster.resources.lake import LakeResource

daily_job = define_asset_job(
    "daily_ingest",
    selection=AssetSelection.assets("catalog", "events", "sessions"),
    partitions_def=DAILY,
    description="Validate the day's landing files into catalog and events, then sessionize.",
)

# Runs at 02:00 UTC for yesterday's partition (the last complete one).
daily_schedule = build_schedule_from_partitioned_job(daily_job, hour_of_day=2, minute_of_hour=0)


@sensor(job=daily_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource):
    """Notices a day whose events and catalog have both landed, records it on the external
    assets, and requests the daily run for it. The cursor remembers each day's file list,
    so a day that lands more files later is run again (re-runs replace, never duplicate)."""
    the_lake = lake.get_lake()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(DAILY.get_partition_keys())
    ready = sorted(set(the_lake.list_partitions(LANDING_EVENTS)) & set(the_lake.list_partitions(LANDING_CATALOG)))
    requests, events = [], []
    for dt in ready:
        if dt not in valid_keys:
            continue
        files = the_lake.list_keys(f"{LANDING_EVENTS}/dt={dt}") + the_lake.list_keys(f"{LANDING_CATALOG}/dt={dt}")
        signature = hashlib.sha1("|".join(files).encode()).hexdigest()[:12]
        if seen.get(dt) == signature:
            continue
        seen[dt] = signature
        requests.append(RunRequest(partition_key=dt, run_key=f"landing-{dt}-{signature}"))
        for asset_key, prefix in (("raw_events", LANDING_EVENTS), ("raw_catalog", LANDING_CATALOG)):
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
        return SkipReason(f"no new landing partitions ({len(ready)} known)")
    return SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(seen, sort_keys=True))
