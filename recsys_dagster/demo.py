"""`make demo`: synthetic data into the local lake, then every daily and weekly partition
through the real Dagster jobs on the local instance ($DAGSTER_HOME), so the UI shows the
runs, materializations and check results afterwards."""

from __future__ import annotations

import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

from recsys_dagster import settings


def _ensure_instance() -> None:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.current().home / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        repo_cfg = Path(__file__).resolve().parent.parent / "dagster.yaml"
        if repo_cfg.exists():
            shutil.copy(repo_cfg, cfg)
        else:
            cfg.write_text("telemetry:\n  enabled: false\n")


def demo_weeks(start: date, days: int) -> list[str]:
    """Weekly partitions whose whole week lies inside the generated days."""
    from recsys_dagster.jobs.partitions import WEEKLY

    last_day = start + timedelta(days=days - 1)
    weeks = []
    for key in WEEKLY.get_partition_keys():
        monday = date.fromisoformat(key)
        if monday >= start and monday + timedelta(days=6) <= last_day:
            weeks.append(key)
    return weeks


def _step(msg: str) -> None:
    print(f"[recsys {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Asset logs (epochs, decisions) yes; Dagster's per-step debug events no.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_partitions(job_name: str, keys: list[str], run_config: dict | None = None) -> list[str]:
    """Run a partitioned job for each key, in order, in this process, on the instance at
    $DAGSTER_HOME (so the UI shows the runs). Stops at the first failed run."""
    _ensure_instance()
    from dagster import DagsterInstance

    from recsys_dagster.definitions import defs

    instance = DagsterInstance.get()
    job = defs.resolve_job_def(job_name)
    config = {**QUIET, **(run_config or {})}
    run_ids = []
    for key in keys:
        t0 = time.time()
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=config, raise_on_error=True)
        if not result.success:
            raise RuntimeError(f"{job_name} run for {key} failed (run {result.run_id})")
        run_ids.append(result.run_id)
        _step(f"{job_name} {key} ok in {time.time() - t0:.0f} s (run {result.run_id[:8]})")
    return run_ids


def run_range(job_name: str, first: str, last: str, run_config: dict | None = None) -> str:
    """One run of a partitioned job over the range first..last (what `dagster asset
    materialize --partition-range` and the UI's single-run backfill do), in this process,
    on the instance at $DAGSTER_HOME."""
    _ensure_instance()
    from dagster import DagsterInstance

    from recsys_dagster.definitions import defs

    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=DagsterInstance.get(),
        run_config={**QUIET, **(run_config or {})},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=True,
    )
    if not result.success:
        raise RuntimeError(f"{job_name} run for {first}...{last} failed (run {result.run_id})")
    return result.run_id


def weeks_until(until: date, keys: list[str]) -> list[str]:
    """Weekly partition keys (Mondays) whose whole week ends on or before `until`."""
    return [k for k in keys if date.fromisoformat(k) + timedelta(days=6) <= until]


def run_demo(
    *,
    start_date: date,
    days: int,
    users: int,
    items: int,
    seed: int,
    fault_rate: float,
    train_weeks: int | None = None,
    epochs: int | None = None,
    skip_generate: bool = False,
) -> dict:
    # The partitions are built from the settings: they must start where the data does.
    os.environ.setdefault("RECSYS_START_DATE", start_date.isoformat())
    s = settings.current()
    if s.start_date != start_date:
        raise ValueError(
            f"RECSYS_START_DATE={s.start_date} but the demo starts on {start_date}: "
            "partitions would not line up with the data"
        )
    _ensure_instance()

    from recsys_dagster.datagen import GeneratorConfig, generate
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(s.lake_uri, endpoint_url=s.s3_endpoint_url, region_name=s.s3_region)
    t0 = time.time()
    if not skip_generate:
        _step(f"generating {days} days of marketplace data ({users} users, {items} items) into {lake.uri}")
        summary = generate(
            lake,
            GeneratorConfig(
                start_date=start_date, days=days, users=users, items=items, seed=seed, fault_rate=fault_rate
            ),
        ).to_dict()
        _step(f"landing data written in {time.time() - t0:.1f} s: {summary.get('totals', {})}")

    day_keys = [(start_date + timedelta(days=i)).isoformat() for i in range(days)]
    t1 = time.time()
    # One single-run backfill, as the README's range command does.
    run_id = run_range("daily_ingest", day_keys[0], day_keys[-1])
    _step(f"{len(day_keys)} daily partitions in one run in {time.time() - t1:.0f} s (run {run_id[:8]})")

    weeks = demo_weeks(start_date, days)
    if train_weeks is not None:
        weeks = weeks[-train_weeks:]
    run_config = {"ops": {"two_tower_model": {"config": {"epochs": epochs}}}} if epochs is not None else None
    run_partitions("weekly_training", weeks, run_config)

    from recsys_dagster.bundle.promote import format_status, status

    print()
    print(format_status(status(lake)))
    print()
    print(f"lake:            {lake.uri}")
    print(f"dagster home:    {os.environ['DAGSTER_HOME']}   (make ui, then http://127.0.0.1:3000)")
    print(f"mlflow store:    {s.mlflow_tracking_uri}")
    print("serve it:        make serve, then POST http://127.0.0.1:8000/recommendations")
    return {"days": day_keys, "weeks": weeks, "seconds": time.time() - t0}
