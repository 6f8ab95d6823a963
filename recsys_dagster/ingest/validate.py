"""Line-level validation of the landing zone (events and catalog), per docs/CONTRACTS.md.

Every input line ends in exactly one of `valid` or `quarantine`, with a reason and a
human-readable detail. Parsing is a plain loop of `json.loads` (fast enough for ~50k
lines/day); Arrow columns are built once at the end.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from recsys_dagster.contract import (
    CATALOG_FIELDS,
    CATEGORY_SEPARATOR,
    EVENT_FIELDS,
    EVENT_QUARANTINE_REASONS,
    EVENT_TYPES,
    LANDING_CONDITIONS,
    LANDING_DEVICE_TYPES,
)

TS_TYPE = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("timestamp", TS_TYPE),
        ("device_type", pa.string()),
        ("extra", pa.string()),
        ("dt", pa.string()),
    ]
)

CATALOG_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("category_path", pa.string()),
        ("price", pa.float64()),
        ("currency", pa.string()),
        ("brand", pa.string()),
        ("location", pa.string()),
        ("condition", pa.string()),
        ("image_url", pa.string()),
        ("created_at", TS_TYPE),
        ("category_l1", pa.string()),
        ("category_l2", pa.string()),
        ("category_l3", pa.string()),
        ("extra", pa.string()),
        ("dt", pa.string()),
    ]
)


def quarantine_schema(id_column: str) -> pa.Schema:
    return pa.schema(
        [
            ("raw", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
            (id_column, pa.string()),
            ("dt", pa.string()),
        ]
    )


EVENTS_QUARANTINE_SCHEMA = quarantine_schema("event_id")
CATALOG_QUARANTINE_SCHEMA = quarantine_schema("item_id")

EVENT_REASONS = EVENT_QUARANTINE_REASONS
# The contract fixes the quarantine columns for the catalog, not its reasons: these are ours.
CATALOG_REASONS: tuple[str, ...] = (
    "malformed_json",
    "not_an_object",
    "missing_field",
    "null_field",
    "wrong_type",
    "invalid_price",
    "invalid_condition",
    "invalid_category_path",
    "invalid_timestamp",
    "duplicate_item_id",
)

# `session_id` is a client value nobody downstream trusts: absent is read as null rather
# than costing a good event. Likewise the free-text catalog fields may be absent or null.
EVENT_NULLABLE = frozenset({"session_id"})
CATALOG_NULLABLE = frozenset({"description", "brand", "image_url"})
# Present but possibly null: a null price means "unknown" (never read as 0).
CATALOG_NULL_MEANS_UNKNOWN = frozenset({"price"})


class Rejected(Exception):
    """One line's quarantine reason and detail (control flow inside the validators)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ValidationResult:
    valid: pa.Table
    quarantine: pa.Table
    counts: dict[str, Any] = field(default_factory=dict)


def check_dt(dt: str) -> date:
    """The partition key as a date; a clear error for anything but `YYYY-MM-DD`."""
    try:
        day = date.fromisoformat(dt)
    except (TypeError, ValueError):
        day = None
    if day is None or day.isoformat() != dt:
        raise ValueError(f"partition key must be a date YYYY-MM-DD, got {dt!r}")
    return day


def parse_utc(value: str, name: str) -> datetime:
    """ISO-8601 with a zone -> aware UTC datetime; naive or unparseable -> Rejected."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected("invalid_timestamp", f"{name} {value!r} is not an ISO-8601 timestamp") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise Rejected("invalid_timestamp", f"{name} {value!r} has no time zone")
    return ts.astimezone(UTC)


def _json_type(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _load_object(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise Rejected("malformed_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _require_fields(
    obj: dict[str, Any], fields: tuple[str, ...], nullable: frozenset[str], null_ok: frozenset[str] = frozenset()
) -> None:
    """Every required field present and non-null (nullable ones may be absent, `null_ok`
    ones must be present and may be null)."""
    missing = [f for f in fields if f not in obj and f not in nullable]
    if missing:
        raise Rejected("missing_field", f"missing required field(s): {', '.join(missing)}")
    nulls = [f for f in fields if f not in nullable and f not in null_ok and obj[f] is None]
    if nulls:
        raise Rejected("null_field", f"null in required field(s): {', '.join(nulls)}")


def _require_str(obj: dict[str, Any], fields: Iterable[str], nullable: frozenset[str]) -> None:
    for f in fields:
        value = obj.get(f)
        if value is None and f in nullable:
            continue
        if not isinstance(value, str):
            raise Rejected("wrong_type", f"{f} must be a string, got {_json_type(value)} {value!r}")
        if not value.strip() and f not in nullable:
            raise Rejected("null_field", f"{f} is an empty string")


def _extra(obj: dict[str, Any], known: tuple[str, ...]) -> str:
    extra = {k: v for k, v in obj.items() if k not in known}
    return json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _id_of(obj: Any, key: str) -> str | None:
    """The id of a rejected line when it has a usable one, for the quarantine table."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def _counts(n_input: int, n_valid: int, reasons: list[str]) -> dict[str, Any]:
    by_reason = dict(sorted(Counter(reasons).items()))
    return {"input": n_input, "valid": n_valid, "quarantined": len(reasons), "by_reason": by_reason}


class _Quarantine:
    def __init__(self, id_column: str, dt: str):
        self.id_column = id_column
        self.dt = dt
        self.raw: list[str] = []
        self.reason: list[str] = []
        self.detail: list[str] = []
        self.ids: list[str | None] = []

    def add(self, raw: str, reason: str, detail: str, row_id: str | None) -> None:
        self.raw.append(raw)
        self.reason.append(reason)
        self.detail.append(detail)
        self.ids.append(row_id)

    def table(self) -> pa.Table:
        schema = quarantine_schema(self.id_column)
        return pa.table(
            {
                "raw": self.raw,
                "reason": self.reason,
                "detail": self.detail,
                self.id_column: self.ids,
                "dt": [self.dt] * len(self.raw),
            },
            schema=schema,
        )


def _clean(line: str) -> str:
    return line.rstrip("\r\n")


def validate_events(lines: Iterable[str], dt: str, known_items: set[str]) -> ValidationResult:
    """Validate landed event lines for day `dt`; `known_items` are the catalog's item ids."""
    day = check_dt(dt)
    str_fields = tuple(f for f in EVENT_FIELDS if f != "timestamp")
    event_types, device_types = frozenset(EVENT_TYPES), frozenset(LANDING_DEVICE_TYPES)
    cols: dict[str, list[Any]] = {name: [] for name in EVENTS_SCHEMA.names if name != "dt"}
    seen: dict[str, int] = {}
    quarantine = _Quarantine("event_id", dt)
    n_input = 0
    for raw in lines:
        n_input += 1
        line = _clean(raw)
        obj: Any = None
        try:
            obj = _load_object(line)
            _require_fields(obj, EVENT_FIELDS, EVENT_NULLABLE)
            _require_str(obj, str_fields, EVENT_NULLABLE)
            if obj["event_type"] not in event_types:
                raise Rejected(
                    "invalid_event_type", f"event_type {obj['event_type']!r} not in {', '.join(EVENT_TYPES)}"
                )
            if obj["device_type"] not in device_types:
                raise Rejected(
                    "invalid_device_type",
                    f"device_type {obj['device_type']!r} not in {', '.join(LANDING_DEVICE_TYPES)}",
                )
            ts_raw = obj["timestamp"]
            if not isinstance(ts_raw, str):
                raise Rejected("wrong_type", f"timestamp must be a string, got {_json_type(ts_raw)} {ts_raw!r}")
            ts = parse_utc(ts_raw, "timestamp")
            if ts.date() != day:
                raise Rejected(
                    "timestamp_outside_partition",
                    f"timestamp {ts_raw!r} is {ts.isoformat()} UTC, not on {dt}",
                )
            if obj["item_id"] not in known_items:
                raise Rejected(
                    "unknown_item", f"item_id {obj['item_id']!r} is not in the catalog of {dt} or the day before"
                )
            # Last: a later copy of an event that was itself rejected is not a duplicate.
            event_id = obj["event_id"]
            if event_id in seen:
                raise Rejected(
                    "duplicate_event_id", f"event_id {event_id!r} already seen on input line {seen[event_id]}"
                )
        except Rejected as rej:
            quarantine.add(line, rej.reason, rej.detail, _id_of(obj, "event_id"))
            continue
        seen[event_id] = n_input
        for f in str_fields:
            cols[f].append(obj.get(f))
        cols["timestamp"].append(ts)
        cols["extra"].append(_extra(obj, EVENT_FIELDS))
    n_valid = len(cols["event_id"])
    valid = pa.table({**cols, "dt": [dt] * n_valid}, schema=EVENTS_SCHEMA)
    q = quarantine.table()
    return ValidationResult(valid, q, _counts(n_input, n_valid, quarantine.reason))


def split_category(path: str) -> list[str]:
    """`"A > B > C"` -> ["A", "B", "C"]; 1-3 non-empty levels or Rejected."""
    levels = [p.strip() for p in path.split(CATEGORY_SEPARATOR)]
    if not 1 <= len(levels) <= 3 or any(not p for p in levels):
        raise Rejected(
            "invalid_category_path",
            f"category_path {path!r} must be 1-3 non-empty levels separated by {CATEGORY_SEPARATOR!r}",
        )
    return levels


def validate_catalog(lines: Iterable[str], dt: str) -> ValidationResult:
    """Validate the landed catalog snapshot of day `dt`."""
    check_dt(dt)
    str_fields = tuple(f for f in CATALOG_FIELDS if f not in ("price",))
    conditions = frozenset(LANDING_CONDITIONS)
    cols: dict[str, list[Any]] = {name: [] for name in CATALOG_SCHEMA.names if name != "dt"}
    seen: dict[str, int] = {}
    quarantine = _Quarantine("item_id", dt)
    n_input = 0
    for raw in lines:
        n_input += 1
        line = _clean(raw)
        obj: Any = None
        try:
            obj = _load_object(line)
            _require_fields(obj, CATALOG_FIELDS, CATALOG_NULLABLE, CATALOG_NULL_MEANS_UNKNOWN)
            _require_str(obj, str_fields, CATALOG_NULLABLE)
            price = obj["price"]
            if price is not None:
                if isinstance(price, bool) or not isinstance(price, (int, float)):
                    raise Rejected("wrong_type", f"price must be a number or null, got {_json_type(price)} {price!r}")
                price = float(price)
                if not math.isfinite(price) or price < 0:
                    raise Rejected("invalid_price", f"price {obj['price']!r} must be a finite number >= 0")
            if obj["condition"] not in conditions:
                raise Rejected(
                    "invalid_condition", f"condition {obj['condition']!r} not in {', '.join(LANDING_CONDITIONS)}"
                )
            levels = split_category(obj["category_path"])
            created_at = parse_utc(obj["created_at"], "created_at")
            item_id = obj["item_id"]
            if item_id in seen:
                raise Rejected("duplicate_item_id", f"item_id {item_id!r} already seen on input line {seen[item_id]}")
        except Rejected as rej:
            quarantine.add(line, rej.reason, rej.detail, _id_of(obj, "item_id"))
            continue
        seen[item_id] = n_input
        for f in str_fields:
            if f != "created_at":
                cols[f].append(obj.get(f))
        cols["price"].append(price)
        cols["created_at"].append(created_at)
        levels += [""] * (3 - len(levels))
        cols["category_l1"].append(levels[0])
        cols["category_l2"].append(levels[1])
        cols["category_l3"].append(levels[2])
        cols["extra"].append(_extra(obj, CATALOG_FIELDS))
    n_valid = len(cols["item_id"])
    valid = pa.table({**cols, "dt": [dt] * n_valid}, schema=CATALOG_SCHEMA)
    q = quarantine.table()
    return ValidationResult(valid, q, _counts(n_input, n_valid, quarantine.reason))
