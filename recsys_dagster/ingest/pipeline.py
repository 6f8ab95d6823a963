"""Ingest one daily partition: landing JSONL.gz -> validated Parquet + quarantine Parquet.

Both outputs are written with `Lake.write_partition` (replace), even when empty, so a
re-run replaces the previous run's files instead of adding to them.
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

    def to_dict(self) -> dict[str, Any]:
        """Flat: the counts (`input`, `valid`, `quarantined`, `by_reason`) beside the other fields."""
        out = asdict(self)
        return {**out.pop("counts"), **out}


def landing_keys(lake: Lake, landing: str, dt: str) -> list[str]:
    prefix = day_prefix(landing, dt)
    keys = [k for k in lake.list_keys(prefix) if k.endswith(LANDING_SUFFIX)]
    if not keys:
        raise IngestError(f"no landing data for {dt}: no *{LANDING_SUFFIX} under {lake.uri}/{prefix}")
    return keys


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
    lake: Lake, dataset: str, quarantine: str, dt: str, result: ValidationResult, sources: list[str]
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
    )


def ingest_catalog_partition(lake: Lake, dt: str) -> IngestSummary:
    """landing/catalog/dt=D/*.jsonl.gz -> catalog/dt=D + quarantine/catalog/dt=D."""
    check_dt(dt)
    keys = landing_keys(lake, LANDING_CATALOG, dt)
    result = validate_catalog(_lines(lake, keys), dt)
    return _write(lake, CATALOG, QUARANTINE_CATALOG, dt, result, keys)


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
    """landing/events/dt=D/*.jsonl.gz (all parts) -> events/dt=D + quarantine/events/dt=D."""
    check_dt(dt)
    keys = landing_keys(lake, LANDING_EVENTS, dt)
    items = known_items(lake, dt)
    result = validate_events(_lines(lake, keys), dt, items)
    return _write(lake, EVENTS, QUARANTINE_EVENTS, dt, result, keys)
