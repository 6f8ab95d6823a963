"""Landing zone (external, observed) -> validated `catalog` and `events`, daily."""


from dagster import AssetDep, AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, asset

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
    description=f"Daily catalog snapshots landed under `{LANDING_CATALOG}/dt=YYYY-MM-DD/catalog.jsonl.gz`.",
    kinds={"s3"},
)


def _ingest_metadata(lake_uri: str, prefix: str, summary: dict) -> dict:
    by_reason = summary.get("by_reason", {})
    meta = {
        "path": MetadataValue.path(f"{lake_uri}/{prefix}"),
        "input_rows": summary["input"],
        "dagster/row_count": summary["valid"],
        "quarantined_rows": summary["quarantined"],
        "quarantine_rate": round(summary["quarantined"] / max(1, summary["input"]), 6),
        "quarantine_by_reason": md_kv(by_reason or {"(none)": 0}, "reason", "rows"),
        "preview": md_table(summary.get("preview", [])),
    }
    for reason, n in by_reason.items():
        meta[f"quarantined_{reason}"] = n
    return meta


@asset(
    partitions_def=DAILY,
    deps=[raw_catalog],
    group_name="ingest",
    kinds={"python", "parquet"},
    description="The validated item table of the day: typed, de-duplicated; invalid rows quarantined with the reason.",
)
def catalog(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    dt = context.partition_key
    summary = ingest_catalog_partition(lake.get_lake(), dt).to_dict()
    return MaterializeResult(metadata=_ingest_metadata(lake.get_lake().uri, day_prefix(CATALOG, dt), summary))


@asset(
    partitions_def=DAILY,
    deps=[raw_events, AssetDep("catalog", partition_mapping=PREVIOUS_AND_SAME_DAY)],
    group_name="ingest",
    kinds={"python", "parquet"},
    description="Typed, validated, de-duplicated events of the day. Rejected rows go to "
    f"`{QUARANTINE_EVENTS}/dt=…` with their reason; none are dropped silently.",
)
def events(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    dt = context.partition_key
    summary = ingest_events_partition(lake.get_lake(), dt).to_dict()
    meta = _ingest_metadata(lake.get_lake().uri, day_prefix(EVENTS, dt), summary)
    meta["quarantine_path"] = MetadataValue.path(f"{lake.get_lake().uri}/{day_prefix(QUARANTINE_EVENTS, dt)}")
    return MaterializeResult(metadata=meta)
