"""Ingest one daily partition: landing JSONL.gz -> validated Parquet + quarantine Parquet.

Both outputs are written with `Lake.write_partition` (replace), even when empty, so a
re-run replaces the previous run's files instead of adding to them.

Real calendars: a day without event files is an ordinary, empty partition (its summary
says no file landed), never an error; the catalog may land once and each day uses the
latest snapshot landed on or before it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from recsys_dagster.contract import (
    CATALOG,
    EVENTS,
    LANDING_CATALOG,
    LANDING_EVENTS,
    QUARANTINE_CATALOG,
    QUARANTINE_EVENTS,
    day_prefix,
)
from recsys_dagster.ingest.validate import ValidationResult, check_dt, validate_catalog, validate_events
from recsys_dagster.lake import Lake

PREVIEW_ROWS = 5
LANDING_SUFFIX = ".jsonl.gz"


class IngestError(RuntimeError):
    """A partition cannot be ingested (missing landing data, missing catalog, corrupt file)."""


@dataclass
class IngestSummary:
    dataset: str
    dt: str
    counts: dict[str, Any]
    preview: list[dict[str, Any]]  # first valid rows, JSON-safe
    sources: list[str]  # landing keys read
    valid_prefix: str
    quarantine_prefix: str
    files: dict[str, int] = field(default_factory=dict)  # prefix -> parquet files written
    snapshot_day: str | None = None  # catalog: the landed snapshot this day uses

    @property
    def empty(self) -> bool:
        """Nothing landed for the day (no file, or files without lines)."""
        return self.counts["input"] == 0

    def to_dict(self) -> dict[str, Any]:
        """Flat: the counts (`input`, `valid`, `quarantined`, `by_reason`) beside the other fields."""
        out = asdict(self)
        return {**out.pop("counts"), **out}


def landing_keys(lake: Lake, landing: str, dt: str) -> list[str]:
    """The day's landed files ([] when none landed)."""
    return [k for k in lake.list_keys(day_prefix(landing, dt)) if k.endswith(LANDING_SUFFIX)]


def has_landed(lake: Lake, landing: str, dt: str) -> bool:
    return bool(landing_keys(lake, landing, dt))


def catalog_snapshot_day(lake: Lake, dt: str) -> str | None:
    """The latest day on or before `dt` whose catalog snapshot landed, or None."""
    # One listing for every day (not one per day): sensors call this on every tick.
    days = {
        part[len("dt=") :]
        for key in lake.list_keys(LANDING_CATALOG)
        if key.endswith(LANDING_SUFFIX)
        for part in key.split("/")
        if part.startswith("dt=")
    }
    before = [d for d in days if d <= dt]
    return max(before) if before else None


def _lines(lake: Lake, keys: list[str]) -> Iterator[str]:
    for key in keys:
        try:
            yield from lake.iter_jsonl_gz_lines(key)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise IngestError(f"cannot read landing file {lake.uri}/{key}: {exc}") from exc


def _json_safe(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def preview_rows(table: pa.Table, n: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    return [{k: _json_safe(v) for k, v in row.items()} for row in table.slice(0, n).to_pylist()]


def _write(
    lake: Lake,
    dataset: str,
    quarantine: str,
    dt: str,
    result: ValidationResult,
    sources: list[str],
    snapshot_day: str | None = None,
) -> IngestSummary:
    valid_prefix, q_prefix = day_prefix(dataset, dt), day_prefix(quarantine, dt)
    files = {
        valid_prefix: lake.write_partition(valid_prefix, result.valid),
        q_prefix: lake.write_partition(q_prefix, result.quarantine),
    }
    return IngestSummary(
        dataset=dataset,
        dt=dt,
        counts=result.counts,
        preview=preview_rows(result.valid),
        sources=sources,
        valid_prefix=valid_prefix,
        quarantine_prefix=q_prefix,
        files=files,
        snapshot_day=snapshot_day,
    )


def ingest_catalog_partition(lake: Lake, dt: str) -> IngestSummary:
    """The latest landed snapshot on or before D -> catalog/dt=D + quarantine/catalog/dt=D.

    A snapshot's rejected rows are quarantined on the day it landed; the days that carry
    it forward have an empty quarantine, so a bad row is reported once."""
    check_dt(dt)
    snapshot = catalog_snapshot_day(lake, dt)
    if snapshot is None:
        raise IngestError(
            f"no catalog snapshot landed on or before {dt} under {lake.uri}/{LANDING_CATALOG}: "
            "land one (e.g. `recsys import --items ...`) before ingesting events"
        )
    keys = landing_keys(lake, LANDING_CATALOG, snapshot)
    result = validate_catalog(_lines(lake, keys), dt)
    if snapshot != dt:
        result = ValidationResult(
            valid=result.valid,
            quarantine=result.quarantine.slice(0, 0),
            counts={**result.counts, "quarantined": 0, "by_reason": {}, "carried_from": snapshot},
        )
    return _write(lake, CATALOG, QUARANTINE_CATALOG, dt, result, keys, snapshot_day=snapshot)


def known_items(lake: Lake, dt: str) -> set[str]:
    """Item ids of the catalog snapshots of D and D-1 (whichever exist)."""
    day = check_dt(dt)
    items: set[str] = set()
    found: list[str] = []
    for d in (day, day - timedelta(days=1)):
        prefix = day_prefix(CATALOG, d.isoformat())
        if lake.has_data(prefix):
            found.append(prefix)
            items.update(lake.read_parquet(prefix, columns=["item_id"]).column("item_id").to_pylist())
    if not found:
        raise IngestError(
            f"no catalog snapshot for {dt} or the day before under {lake.uri}/{CATALOG}: "
            "ingest the catalog partition first"
        )
    return items


def ingest_events_partition(lake: Lake, dt: str) -> IngestSummary:
    """landing/events/dt=D/*.jsonl.gz (all parts) -> events/dt=D + quarantine/events/dt=D.

    No file (or only empty files) for D gives empty partitions, recorded as such."""
    check_dt(dt)
    keys = landing_keys(lake, LANDING_EVENTS, dt)
    if not keys:
        return _write(lake, EVENTS, QUARANTINE_EVENTS, dt, validate_events([], dt, set()), keys)
    items = known_items(lake, dt)
    result = validate_events(_lines(lake, keys), dt, items)
    return _write(lake, EVENTS, QUARANTINE_EVENTS, dt, result, keys)
