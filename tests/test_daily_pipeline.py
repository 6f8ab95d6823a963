"""Tier 2: the daily assets and their checks through `dagster.materialize`, in process,
on a real (temporary) Dagster instance and a small generated lake."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from recsys_dagster.assets import ingest, sessions
from recsys_dagster.checks.asset_checks import DAILY_CHECKS
from recsys_dagster.contract import (
    CATALOG,
    EVENTS,
    LANDING_CATALOG,
    LANDING_EVENTS,
    QUARANTINE_EVENTS,
    SESSIONS,
    day_prefix,
)
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


@pytest.fixture(scope="module")
def gappy(tmp_path_factory, spark):
    """Four days with a real calendar: the catalog lands once (day 1), day 2 has no event
    file at all, day 3 an empty one."""
    from recsys_dagster.lake import Lake

    root = tmp_path_factory.mktemp("gappy")
    lake = Lake.from_uri(f"file://{root / 'lake'}")
    generate(lake, GeneratorConfig(start_date=date.fromisoformat(DAY1), days=4, users=120, items=150, seed=5))
    days = [f"2026-10-0{d}" for d in range(5, 9)]
    for dt in days[1:]:
        lake.delete_prefix(f"{LANDING_CATALOG}/dt={dt}")
    lake.delete_prefix(f"{LANDING_EVENTS}/dt={days[1]}")
    lake.delete_prefix(f"{LANDING_EVENTS}/dt={days[2]}")
    lake.write_jsonl_gz(f"{LANDING_EVENTS}/dt={days[2]}/part-00000.jsonl.gz", [])
    return lake, days


def test_range_with_empty_days_and_one_catalog_records_checks_per_day(gappy):
    """The README's range backfill over a real calendar: empty days are ordinary
    partitions, the catalog carries forward, and every day's check result is recorded
    for that day, so the gate finds them."""
    from dagster import Definitions, define_asset_job

    from recsys_dagster.assets.deployment import latest_check_passed
    from recsys_dagster.checks.asset_checks import (
        catalog_expectations,
        events_expectations,
        events_quarantine_rate,
        sessions_expectations,
    )

    lake, days = gappy
    job = define_asset_job(
        "range", selection=["catalog", "events", "sessions"], partitions_def=ingest.catalog.partitions_def
    )
    defs = Definitions(assets=ASSETS[:5], asset_checks=DAILY_CHECKS, jobs=[job], resources=_resources(lake.uri))
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("range").execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
    )
    assert result.success
    for dt in days:
        assert lake.has_data(day_prefix(CATALOG, dt)) and lake.has_data(day_prefix(SESSIONS, dt))
    assert lake.read_parquet(day_prefix(EVENTS, days[1])).num_rows == 0
    assert lake.read_parquet(day_prefix(EVENTS, days[2])).num_rows == 0
    assert lake.read_parquet(day_prefix(EVENTS, days[3])).num_rows > 0
    # Every catalog day holds the one snapshot (day 1's items).
    day1_items = set(lake.read_parquet(day_prefix(CATALOG, days[0])).column("item_id").to_pylist())
    assert set(lake.read_parquet(day_prefix(CATALOG, days[3])).column("item_id").to_pylist()) == day1_items
    events_meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "events")
    assert events_meta.materialization.metadata["empty_days"].value == 2
    for check in (catalog_expectations, events_expectations, sessions_expectations):
        for dt in days:
            assert latest_check_passed(instance, check.check_key, dt), (check.check_key.name, dt)
    # The quarantine rate is judged per day too: day 4's events name listings created after
    # the one catalog snapshot (unknown_item), which only that day's warning shows.
    rate_key = events_quarantine_rate.check_key
    assert all(latest_check_passed(instance, rate_key, dt) for dt in days[:3])
    assert not latest_check_passed(instance, rate_key, days[3])
    reasons = lake.read_parquet(day_prefix(QUARANTINE_EVENTS, days[3]), columns=["reason"]).column("reason")
    assert "unknown_item" in reasons.to_pylist()


def test_empty_day_that_lost_every_row_still_fails_its_check(gappy, tmp_path):
    """Empty because every line was rejected is not an empty day: the suite fails."""
    from recsys_dagster.checks.asset_checks import suite_on_day
    from recsys_dagster.ingest.pipeline import ingest_catalog_partition, ingest_events_partition
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    generate(lake, GeneratorConfig(start_date=date.fromisoformat(DAY1), days=1, users=20, items=30, seed=2))
    lake.delete_prefix(f"{LANDING_EVENTS}/dt={DAY1}")
    lake.write_jsonl_gz(f"{LANDING_EVENTS}/dt={DAY1}/part-00000.jsonl.gz", [{"event_id": "x"}])
    ingest_catalog_partition(lake, DAY1)
    summary = ingest_events_partition(lake, DAY1)
    assert summary.counts["valid"] == 0 and summary.counts["quarantined"] == 1 and not summary.empty
    assert not suite_on_day(lake, "events", EVENTS, DAY1).passed


def test_daily_schedule_waits_for_the_day_to_land(gappy):
    from datetime import datetime

    from dagster import RunRequest, SkipReason, build_schedule_context

    from recsys_dagster.jobs.daily import daily_schedule

    lake, days = gappy
    resources = {"lake": LakeResource(uri=lake.uri)}

    def tick(day: str):
        when = datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC)
        with build_schedule_context(scheduled_execution_time=when, resources=resources) as ctx:
            return daily_schedule(ctx)

    landed = tick("2026-10-09")  # runs for 10-08, which landed
    assert isinstance(landed, RunRequest) and landed.partition_key == days[3]
    waiting = tick("2026-10-07")  # 10-06 has no event file yet
    assert isinstance(waiting, SkipReason) and "has not landed yet" in waiting.skip_message
    empty = tick("2026-10-08")  # 10-07 landed an empty file: an ordinary day
    assert isinstance(empty, RunRequest) and empty.partition_key == days[2]
