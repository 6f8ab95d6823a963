"""Sessionization of a day of events (CONTRACTS.md "sessions"), in PySpark.

A session is a user's run of events with no gap over `gap_minutes` (a gap of exactly the
limit stays in). It belongs to the day on which it closes: day D holds the sessions whose
`end_ts + gap` falls in [D, D+1). Computing D therefore reads events of D-1 and D, so a
session crossing midnight is kept whole in D and never split or repeated in D-1.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_dagster.contract import EVENT_WEIGHTS, EVENTS, SESSIONS, day_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.records import Record
from recsys_dagster.settings import documented
from recsys_dagster.spark.io import read_lake_parquet, write_lake_parquet

REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "event_type", "timestamp", "device_type")

SESSION_COLUMNS: tuple[str, ...] = (
    "session_id",
    "user_id",
    "start_ts",
    "end_ts",
    "duration_s",
    "item_ids",
    "event_types",
    "event_ids",
    "timestamps",
    "event_weights",
    "device_type",
    "n_events",
    "n_items",
    "dt",
)

# Bucket upper bounds (inclusive) of the session-length histogram in the summary.
DEFAULT_GAP_MINUTES = 30


@dataclass(frozen=True)
class SessionizeConfig:
    """How events become sessions."""

    gap_minutes: int = documented(DEFAULT_GAP_MINUTES, "Inactivity that ends a session, in minutes.")


_LENGTH_BUCKETS: tuple[tuple[str, int], ...] = (
    ("1", 1),
    ("2", 2),
    ("3-5", 5),
    ("6-10", 10),
    ("11-20", 20),
    ("21-50", 50),
)
_PREVIEW_LIST_ITEMS = 5


def _day_start_us(day: str) -> int:
    try:
        d = date.fromisoformat(day)
    except ValueError as exc:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}") from exc
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000


def session_id_for(user_id: str, start_ts: datetime, first_event_id: str) -> str:
    """The contract's session id, reproducible outside Spark:
    sha1 of `"{user_id}|{start micros since epoch, UTC}|{first_event_id}"`, first 16 hex."""
    if start_ts.tzinfo is None:
        raise ValueError("start_ts must be timezone-aware")
    delta = start_ts - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return hashlib.sha1(f"{user_id}|{micros}|{first_event_id}".encode()).hexdigest()[:16]


def _fail_if(cond: Column, message: str, value: Column) -> Column:
    # Validation inside the plan (no extra pass over the data): the query fails with
    # `message` when a row breaks the rule. Wrapped around a column the output needs, so
    # the optimizer cannot prune it.
    return F.when(cond, F.raise_error(F.lit(message))).otherwise(value)


def sessionize(
    events: DataFrame,
    day: str,
    gap_minutes: int = DEFAULT_GAP_MINUTES,
    weights: dict[str, float] = EVENT_WEIGHTS,
) -> DataFrame:
    """The sessions of `day` (sessions schema) from `events` of day-1 and day.

    Duplicate event ids are collapsed first (the earliest copy is kept), since overlapping
    inputs are expected. Rows with a null key field, an event type missing from `weights`,
    or a timestamp outside [day-1, day+1) make the query fail with a clear message when it
    runs: events of day+1 would close sessions that belong to a later day.
    """
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack required columns {missing}; have {events.columns}")
    if gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be > 0, got {gap_minutes}")
    if not weights:
        raise ValueError("weights must name at least one event type")

    day_start = _day_start_us(day)
    lo, hi = day_start - 86_400_000_000, day_start + 86_400_000_000
    gap_us = gap_minutes * 60 * 1_000_000
    weight_map = F.create_map(*[x for k, v in weights.items() for x in (F.lit(k), F.lit(float(v)))])

    ts_us = F.unix_micros(F.col("timestamp").cast("timestamp"))
    weight = weight_map[F.col("event_type")]
    checked = events.select(
        _fail_if(F.col("event_id").isNull(), "sessionize: null event_id", F.col("event_id")).alias("event_id"),
        _fail_if(F.col("user_id").isNull(), "sessionize: null user_id", F.col("user_id")).alias("user_id"),
        _fail_if(
            ts_us.isNull() | (ts_us < lo) | (ts_us >= hi),
            f"sessionize: event timestamp null or outside [{day}-1, {day}+1) for day {day}",
            ts_us,
        ).alias("ts_us"),
        F.col("item_id"),
        F.col("event_type"),
        _fail_if(
            weight.isNull(),
            f"sessionize: event_type not in weights {sorted(weights)}",
            weight,
        ).alias("weight"),
        F.col("device_type"),
    )

    # Earliest copy of each event id wins: deterministic whatever the input order.
    deduped = (
        checked.groupBy("event_id")
        .agg(F.min(F.struct("ts_us", "user_id", "item_id", "event_type", "weight", "device_type")).alias("e"))
        .select("event_id", "e.*")
    )

    by_user = Window.partitionBy("user_id").orderBy("ts_us", "event_id")
    prev = F.lag("ts_us").over(by_user)
    flagged = deduped.withColumn("is_new", F.when(prev.isNull() | (F.col("ts_us") - prev > gap_us), 1).otherwise(0))
    numbered = flagged.withColumn(
        "session_idx", F.sum("is_new").over(by_user.rowsBetween(Window.unboundedPreceding, 0))
    )

    # Sorting structs orders by their fields in turn: timestamp, then event id.
    ev = F.struct("ts_us", "event_id", "item_id", "event_type", "weight", "device_type")
    grouped = numbered.groupBy("user_id", "session_idx").agg(F.array_sort(F.collect_list(ev)).alias("evs"))

    start_us = F.col("evs")[0]["ts_us"]
    end_us = F.element_at("evs", -1)["ts_us"]
    closes = end_us + F.lit(gap_us)
    in_day = grouped.where((closes >= F.lit(day_start)) & (closes < F.lit(hi)))

    first_id = F.col("evs")[0]["event_id"]
    to_ts = lambda c: F.timestamp_micros(c)  # noqa: E731
    return in_day.select(
        F.substring(F.sha1(F.concat_ws("|", "user_id", start_us.cast("string"), first_id)), 1, 16).alias("session_id"),
        "user_id",
        to_ts(start_us).alias("start_ts"),
        to_ts(end_us).alias("end_ts"),
        ((end_us - start_us) / F.lit(1_000_000.0)).cast("double").alias("duration_s"),
        F.col("evs.item_id").alias("item_ids"),
        F.col("evs.event_type").alias("event_types"),
        F.col("evs.event_id").alias("event_ids"),
        F.transform("evs", lambda e: to_ts(e["ts_us"])).alias("timestamps"),
        F.col("evs.weight").alias("event_weights"),
        F.col("evs")[0]["device_type"].alias("device_type"),
        F.size("evs").cast("long").alias("n_events"),
        F.size(F.array_distinct(F.col("evs.item_id"))).cast("long").alias("n_items"),
        F.lit(day).alias("dt"),
    )


def _previous_day(dt: str) -> str:
    return (date.fromisoformat(dt) - timedelta(days=1)).isoformat()


def _shorten(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        head = [_shorten(v) for v in value[:_PREVIEW_LIST_ITEMS]]
        return head + [f"... (+{len(value) - _PREVIEW_LIST_ITEMS})"] if len(value) > _PREVIEW_LIST_ITEMS else head
    return value


@dataclass(frozen=True)
class SessionsSummary(Record):
    """What `sessionize_partition` wrote for a day."""

    dt: str
    sessions: int
    events: int  # events in those sessions
    users: int
    length_histogram: dict[str, int]  # events per session bucket -> sessions
    duration_p50_s: float | None
    duration_p95_s: float | None
    preview: list[dict[str, Any]]  # first rows, lists shortened
    files: int
    gap_minutes: int
    input_events: int  # rows read (D-1 and D)
    duplicate_events: int  # rows collapsed by event id


def _summarize(staged: Path) -> dict[str, Any]:
    """Counts, length histogram, duration percentiles and a preview, from the written files."""
    files = sorted(staged.glob("*.parquet"))
    table = pq.ParquetDataset([str(f) for f in files]).read() if files else None
    if table is None or table.num_rows == 0:
        return {
            "sessions": 0,
            "events": 0,
            "users": 0,
            "length_histogram": {},
            "duration_p50_s": None,
            "duration_p95_s": None,
            "preview": [],
        }
    n_events = table.column("n_events")
    hist: dict[str, int] = {}
    lower = 0
    for label, upper in _LENGTH_BUCKETS:
        hist[label] = int(pc.sum(pc.and_(pc.greater(n_events, lower), pc.less_equal(n_events, upper))).as_py() or 0)
        lower = upper
    hist[f"{lower + 1}+"] = int(pc.sum(pc.greater(n_events, lower)).as_py() or 0)
    p50, p95 = pc.quantile(table.column("duration_s"), q=[0.5, 0.95]).to_pylist()
    return {
        "sessions": table.num_rows,
        "events": int(pc.sum(n_events).as_py()),
        "users": int(pc.count_distinct(table.column("user_id")).as_py()),
        "length_histogram": hist,
        "duration_p50_s": float(p50),
        "duration_p95_s": float(p95),
        "preview": [{k: _shorten(v) for k, v in row.items()} for row in table.slice(0, 5).to_pylist()],
    }


def sessionize_partition(
    spark: SparkSession,
    lake: Lake,
    dt: str,
    gap_minutes: int = DEFAULT_GAP_MINUTES,
    staging_dir: Path | None = None,
) -> SessionsSummary:
    """Read events of dt-1 (if present) and dt, write `sessions/dt=<dt>`, return a summary.

    Raises ValueError when the events partition of dt is missing (the day was never
    ingested); an ingested empty day has an empty partition and gives empty sessions.
    """
    if not lake.has_data(day_prefix(EVENTS, dt)):
        raise ValueError(f"no events at {lake.uri}/{day_prefix(EVENTS, dt)}: ingest day {dt} first")
    own_staging = staging_dir is None
    staging = Path(tempfile.mkdtemp(prefix=f"sessionize-{dt}-")) if own_staging else Path(staging_dir)
    try:
        prefixes = [day_prefix(EVENTS, _previous_day(dt)), day_prefix(EVENTS, dt)]
        events = read_lake_parquet(spark, lake, prefixes, staging)
        if events is None:  # the day was listed above; it vanished meanwhile
            raise ValueError(f"no events readable for {dt}")
        counts = events.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("event_id").alias("ids")).first()
        sessions = sessionize(events, dt, gap_minutes).sortWithinPartitions("user_id", "start_ts")
        files = write_lake_parquet(sessions, lake, day_prefix(SESSIONS, dt), staging)
        return SessionsSummary(
            **_summarize(staging / "write"),
            dt=dt,
            files=files,
            gap_minutes=gap_minutes,
            input_events=int(counts["rows"]),
            duplicate_events=int(counts["rows"] - counts["ids"]),
        )
    finally:
        if own_staging:
            shutil.rmtree(staging, ignore_errors=True)
