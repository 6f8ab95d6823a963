"""Landing zone (external, observed) -> validated `catalog` and `events`, daily."""

from dagster import AssetDep, AssetExecutionContext, AssetSpec, BackfillPolicy, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import md_kv, md_table
from recsys_dagster.contract import CATALOG, EVENTS, LANDING_CATALOG, LANDING_EVENTS, QUARANTINE_EVENTS, day_prefix
from recsys_dagster.ingest.pipeline import ingest_catalog_partition, ingest_events_partition
from recsys_dagster.jobs.partitions import DAILY, PREVIOUS_AND_SAME_DAY
from recsys_dagster.resources.lake import LakeResource

raw_events = AssetSpec(
    "raw_events",
    partitions_def=DAILY,
    group_name="landing",
    description=f"Event logs landed by producers under `{LANDING_EVENTS}/dt=YYYY-MM-DD/` (JSONL.gz). "
    "Written outside this project; the landing sensor records each new day.",
    kinds={"s3"},
)
raw_catalog = AssetSpec(
    "raw_catalog",
    partitions_def=DAILY,
    group_name="landing",
    description=f"Catalog snapshots landed under `{LANDING_CATALOG}/dt=YYYY-MM-DD/catalog.jsonl.gz`: daily, "
    "or once; each day uses the latest snapshot landed on or before it.",
    kinds={"s3"},
)


def _combine(summaries: list[dict]) -> dict:
    """One day's summary, or the sum over the days of a single-run backfill."""
    if len(summaries) == 1:
        return summaries[0]
    by_reason: dict[str, int] = {}
    for s in summaries:
        for reason, n in s.get("by_reason", {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {
        "input": sum(s["input"] for s in summaries),
        "valid": sum(s["valid"] for s in summaries),
        "quarantined": sum(s["quarantined"] for s in summaries),
        "by_reason": by_reason,
        "preview": summaries[-1].get("preview", []),
    }


def _ingest_metadata(lake_uri: str, dataset: str, days: list[str], summaries: list[dict]) -> dict:
    summary = _combine(summaries)
    by_reason = summary.get("by_reason", {})
    where = day_prefix(dataset, days[0]) if len(days) == 1 else f"{dataset}/dt={days[0]}…{days[-1]}"
    meta = {
        "path": MetadataValue.path(f"{lake_uri}/{where}"),
        "input_rows": summary["input"],
        "dagster/row_count": summary["valid"],
        "quarantined_rows": summary["quarantined"],
        "quarantine_rate": round(summary["quarantined"] / max(1, summary["input"]), 6),
        "quarantine_by_reason": md_kv(by_reason or {"(none)": 0}, "reason", "rows"),
        "preview": md_table(summary.get("preview", [])),
    }
    if len(days) > 1:
        meta["days"] = len(days)
        meta["per_day"] = md_table(
            [{"dt": d, "valid": s["valid"], "quarantined": s["quarantined"]} for d, s in zip(days, summaries)],
            max_rows=400,
        )
    for reason, n in by_reason.items():
        meta[f"quarantined_{reason}"] = n
    empty = [d for d, s in zip(days, summaries) if s["input"] == 0]
    meta["empty_days"] = len(empty)
    if empty:
        # An ordinary outcome on real calendars: recorded, never an error.
        meta["empty_day_list"] = ", ".join(empty)
    snapshots = sorted({s["snapshot_day"] for s in summaries if s.get("snapshot_day")})
    if snapshots:
        meta["catalog_snapshot"] = ", ".join(snapshots)
    return meta


# Single-run backfills: a range of days is one run (one process, one Spark session), as
# `dagster asset materialize --partition-range` and the UI's single-run option ask for.
SINGLE_RUN = BackfillPolicy.single_run()


@asset(
    partitions_def=DAILY,
    deps=[raw_catalog],
    group_name="ingest",
    kinds={"python", "parquet"},
    backfill_policy=SINGLE_RUN,
    description="The validated item table of the day, from the latest catalog snapshot landed on or before it: "
    "typed, de-duplicated; invalid rows quarantined with the reason (on the day the snapshot landed).",
)
def catalog(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    days = sorted(context.partition_keys)
    summaries = [ingest_catalog_partition(lake.get_lake(), dt).to_dict() for dt in days]
    return MaterializeResult(metadata=_ingest_metadata(lake.get_lake().uri, CATALOG, days, summaries))


@asset(
    partitions_def=DAILY,
    deps=[raw_events, AssetDep("catalog", partition_mapping=PREVIOUS_AND_SAME_DAY)],
    group_name="ingest",
    kinds={"python", "parquet"},
    backfill_policy=SINGLE_RUN,
    description="Typed, validated, de-duplicated events of the day. Rejected rows go to "
    f"`{QUARANTINE_EVENTS}/dt=…` with their reason; none are dropped silently. A day without "
    "events is an empty partition, recorded as such.",
)
def events(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    days = sorted(context.partition_keys)
    summaries = [ingest_events_partition(lake.get_lake(), dt).to_dict() for dt in days]
    meta = _ingest_metadata(lake.get_lake().uri, EVENTS, days, summaries)
    meta["quarantine_path"] = MetadataValue.path(f"{lake.get_lake().uri}/{day_prefix(QUARANTINE_EVENTS, days[-1])}")
    return MaterializeResult(metadata=meta)
