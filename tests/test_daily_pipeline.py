"""Tier 2: the daily assets and their checks through `dagster.materialize`, in process,
on a real (temporary) Dagster instance and a small generated lake."""

from __future__ import annotations

import gzip
import json
from datetime import date

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from recsys_dagster.assets import ingest, sessions
from recsys_dagster.checks.asset_checks import DAILY_CHECKS
from recsys_dagster.contract import CATALOG, EVENTS, LANDING_EVENTS, QUARANTINE_EVENTS, SESSIONS, day_prefix
from recsys_dagster.datagen import GeneratorConfig, generate
from recsys_dagster.resources import LakeResource, SparkResource

pytestmark = pytest.mark.spark

DAY1, DAY2 = "2026-10-05", "2026-10-06"
ASSETS = [ingest.raw_events, ingest.raw_catalog, ingest.catalog, ingest.events, sessions.sessions, *DAILY_CHECKS]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("daily")
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{root / 'lake'}")
    summary = generate(
        lake,
        GeneratorConfig(start_date=date.fromisoformat(DAY1), days=2, users=150, items=200, seed=3, fault_rate=0.03),
    )
    return root, lake, summary.to_dict()


def _resources(lake_uri: str) -> dict:
    return {"lake": LakeResource(uri=lake_uri), "spark": SparkResource(master="local[2]")}


def _run(lake, dt: str, instance, raise_on_error: bool = True):
    return materialize(
        ASSETS,
        partition_key=dt,
        resources=_resources(lake.uri),
        instance=instance,
        selection=["catalog", "events", "sessions"],
        raise_on_error=raise_on_error,
    )


def test_two_days_materialize_with_checks_passing(generated):
    _root, lake, summary = generated
    instance = DagsterInstance.ephemeral()
    for dt in (DAY1, DAY2):
        result = _run(lake, dt, instance)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} >= {
            "events_expectations",
            "catalog_expectations",
            "sessions_expectations",
        }
        assert all(c.passed for c in checks if c.check_name.endswith("_expectations")), [
            (c.check_name, c.metadata) for c in checks if not c.passed
        ]

    # Every landed line is either an event or a quarantined row, with its reason.
    for dt in (DAY1, DAY2):
        lines = sum(
            len(gzip.decompress(lake.get_bytes(k)).splitlines()) for k in lake.list_keys(f"{LANDING_EVENTS}/dt={dt}")
        )
        valid = lake.read_parquet(day_prefix(EVENTS, dt)).num_rows
        quarantined = lake.read_parquet(day_prefix(QUARANTINE_EVENTS, dt))
        assert valid + quarantined.num_rows == lines
        assert quarantined.num_rows > 0 and set(quarantined.column("reason").to_pylist()) <= {
            "malformed_json",
            "not_an_object",
            "missing_field",
            "null_field",
            "wrong_type",
            "invalid_event_type",
            "invalid_device_type",
            "invalid_timestamp",
            "timestamp_outside_partition",
            "duplicate_event_id",
            "unknown_item",
        }

    mats = instance.get_latest_materialization_event(AssetKey("events"))
    meta = mats.asset_materialization.metadata
    assert meta["dagster/row_count"].value > 0
    assert meta["quarantined_rows"].value > 0
    assert lake.read_parquet(day_prefix(SESSIONS, DAY2)).num_rows > 0
    assert lake.read_parquet(day_prefix(CATALOG, DAY2)).num_rows > 0


def test_rerun_is_idempotent(generated):
    _root, lake, _ = generated
    instance = DagsterInstance.ephemeral()
    _run(lake, DAY1, instance)
    before = {p: lake.read_parquet(day_prefix(p, DAY1)).num_rows for p in (EVENTS, SESSIONS, CATALOG)}
    _run(lake, DAY1, instance)
    after = {p: lake.read_parquet(day_prefix(p, DAY1)).num_rows for p in (EVENTS, SESSIONS, CATALOG)}
    assert before == after
    assert len([k for k in lake.list_keys(day_prefix(EVENTS, DAY1)) if k.endswith(".parquet")]) == 1


def test_bad_partition_fails_its_check_and_blocks_sessions(tmp_path, spark):
    """A day whose every event names an unknown device: ingestion quarantines all of it
    (nothing lost), the events suite fails on the empty table, and because the check is
    blocking, `sessions` is not materialized in that run."""
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    generate(lake, GeneratorConfig(start_date=date.fromisoformat(DAY1), days=1, users=50, items=60, seed=5))
    key = lake.list_keys(f"{LANDING_EVENTS}/dt={DAY1}")[0]
    broken = []
    for line in gzip.decompress(lake.get_bytes(key)).decode().splitlines():
        rec = json.loads(line)
        rec["device_type"] = "smart_fridge"
        broken.append(rec)
    lake.write_jsonl_gz(key, broken)

    result = _run(lake, DAY1, DagsterInstance.ephemeral(), raise_on_error=False)
    evals = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not evals["events_expectations"].passed
    assert evals["events_expectations"].metadata["expectations_failed"].value >= 1
    assert not evals["events_quarantine_rate"].passed
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("events") in materialized
    assert AssetKey("sessions") not in materialized
    assert not lake.has_data(day_prefix(SESSIONS, DAY1))
    assert lake.read_parquet(day_prefix(QUARANTINE_EVENTS, DAY1)).num_rows == len(broken)


def test_landing_sensor_requests_each_new_day_once(tmp_path):
    from dagster import SensorResult, SkipReason, build_sensor_context

    from recsys_dagster.jobs.daily import landing_sensor
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    generate(lake, GeneratorConfig(start_date=date.fromisoformat(DAY1), days=2, users=20, items=30, seed=1))
    resources = {"lake": LakeResource(uri=lake.uri)}
    with build_sensor_context(resources=resources, instance=DagsterInstance.ephemeral()) as ctx:
        first = landing_sensor(ctx)
    assert isinstance(first, SensorResult)
    assert [r.partition_key for r in first.run_requests] == [DAY1, DAY2]
    assert {(e.asset_key.path[0], e.partition) for e in first.asset_events} == {
        ("raw_events", DAY1),
        ("raw_catalog", DAY1),
        ("raw_events", DAY2),
        ("raw_catalog", DAY2),
    }
    with build_sensor_context(resources=resources, cursor=first.cursor, instance=DagsterInstance.ephemeral()) as ctx:
        assert isinstance(landing_sensor(ctx), SkipReason)

    # A day that lands one more file later is requested again (the re-run replaces it).
    lake.write_jsonl_gz(f"{LANDING_EVENTS}/dt={DAY2}/part-00001.jsonl.gz", [])
    with build_sensor_context(resources=resources, cursor=first.cursor, instance=DagsterInstance.ephemeral()) as ctx:
        again = landing_sensor(ctx)
    assert [r.partition_key for r in again.run_requests] == [DAY2]


def test_single_run_backfill_of_a_partition_range(generated):
    """`--partition-range` / the UI's single-run backfill: both days in one run, one Spark
    session, each day's partition written and checked."""
    from dagster import Definitions, define_asset_job

    _root, lake, _ = generated
    job = define_asset_job(
        "range", selection=["catalog", "events", "sessions"], partitions_def=ingest.catalog.partitions_def
    )
    defs = Definitions(assets=ASSETS[:5], asset_checks=DAILY_CHECKS, jobs=[job], resources=_resources(lake.uri))
    result = defs.resolve_job_def("range").execute_in_process(
        instance=DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": DAY1, "dagster/asset_partition_range_end": DAY2},
    )
    assert result.success
    mats = {(e.asset_key.path[0], e.partition) for e in result.get_asset_materialization_events()}
    assert mats == {(a, d) for a in ("catalog", "events", "sessions") for d in (DAY1, DAY2)}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["sessions_expectations"].passed
    assert checks["sessions_expectations"].metadata["partitions"].value == 2
    events_meta = [e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "events"][0]
    total = events_meta.materialization.metadata["dagster/row_count"].value
    assert total == sum(lake.read_parquet(day_prefix(EVENTS, d)).num_rows for d in (DAY1, DAY2))
