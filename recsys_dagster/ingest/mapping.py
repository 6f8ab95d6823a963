"""How the columns of a user's files map onto the landing contract (for `recsys import`).

A mapping comes from a small TOML file (`[events]`, `[items]`, top-level `missing_items`),
from command-line flags, or both: a flag overrides the same key of the file. Every default
is declared here, once, on the dataclass that uses it.

```toml
missing_items = "add"           # or "reject": interactions whose item is not in the items file

[events]
user = "userId"
item = "movieId"
timestamp = "timestamp"         # epoch s / epoch ms / ISO-8601; timestamp_unit = "auto" | "s" | "ms" | "iso"
rating = "rating"               # event type from a number ...
rating_below = "view"
[events.rating_thresholds]      # ... value >= threshold -> event type (the highest match wins)
purchase = 5
add_to_favorites = 4
click = 3

[items]
id = "movieId"
title = "title"
category = "genres"
category_separator = "|"
```

Or, for an event column: `event = "event"` and `[events.event_map]` with
`addtocart = "add_to_favorites"`; or one type for every row: `event_type = "purchase"`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_dagster.contract import CATEGORY_SEPARATOR, EVENT_TYPES
from recsys_dagster.records import Record

FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "jsonl")
TIMESTAMP_UNITS: tuple[str, ...] = ("auto", "s", "ms", "iso")
MISSING_ITEMS: tuple[str, ...] = ("add", "reject")


class MappingError(ValueError):
    """The mapping (file or flags) is incomplete or contradicts itself."""


@dataclass(frozen=True)
class FileOptions:
    """How to read one kind of input file; the format defaults to the file's extension."""

    format: str | None = None  # csv | tsv | parquet | jsonl (also with .gz)
    delimiter: str | None = None  # csv/tsv only; default "," for csv, tab for tsv
    header: bool = True  # csv/tsv: first line names the columns; without it columns are "1", "2", ...


@dataclass(frozen=True)
class EventsMapping(Record):
    """Interaction file columns -> landing event fields."""

    user: str
    item: str
    timestamp: str
    timestamp_unit: str = "auto"
    session: str | None = None
    device: str | None = None
    # The event type: exactly one of `event` (with an optional value map), `rating` (with
    # thresholds) or a constant `event_type`.
    event: str | None = None
    event_map: dict[str, str] | None = None  # source value -> contract event type
    rating: str | None = None
    rating_thresholds: dict[str, float] | None = None  # event type -> lowest value that gives it
    rating_below: str | None = None  # type below the lowest threshold; unset: such rows are rejected
    event_type: str | None = None
    file: FileOptions = field(default_factory=FileOptions)

    def __post_init__(self) -> None:
        _check_unit(self.timestamp_unit, "events.timestamp_unit")
        sources = [k for k in ("event", "rating", "event_type") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise MappingError(
                "say where the event type comes from, exactly one of: an event column (--event, with "
                "--event-map), a numeric column (--rating, with --rating-thresholds) or one type for every "
                f"row (--event-type); got {sources or 'none'}"
            )
        if self.event_map is not None:
            if self.event is None:
                raise MappingError("events.event_map needs events.event (the column it maps)")
            _check_types(self.event_map.values(), "events.event_map")
        if self.rating is not None:
            if not self.rating_thresholds:
                raise MappingError("events.rating needs events.rating_thresholds, e.g. purchase=5,click=3")
            _check_types(self.rating_thresholds, "events.rating_thresholds")
            bad = {k: v for k, v in self.rating_thresholds.items() if not math.isfinite(v)}
            if bad:
                raise MappingError(f"events.rating_thresholds must be finite numbers, got {bad}")
        elif self.rating_thresholds is not None or self.rating_below is not None:
            raise MappingError("events.rating_thresholds / rating_below need events.rating (the column)")
        if self.rating_below is not None:
            _check_types([self.rating_below], "events.rating_below")
        if self.event_type is not None:
            _check_types([self.event_type], "events.event_type")

    @property
    def columns(self) -> list[str]:
        cols = [self.user, self.item, self.timestamp, self.session, self.device, self.event, self.rating]
        return [c for c in cols if c is not None]


@dataclass(frozen=True)
class ItemsMapping(Record):
    """Items file columns -> landing catalog fields. A field without a column gets an
    explicit unknown value (see `recsys_dagster.ingest.importer`)."""

    id: str
    title: str | None = None
    description: str | None = None
    category: str | None = None  # a string (split on category_separator) or a list column
    category_separator: str = CATEGORY_SEPARATOR
    brand: str | None = None
    price: str | None = None
    currency: str | None = None  # a column ...
    currency_code: str | None = None  # ... or one code for every item (e.g. EUR)
    location: str | None = None
    condition: str | None = None
    created_at: str | None = None
    created_at_unit: str = "auto"
    image_url: str | None = None
    file: FileOptions = field(default_factory=FileOptions)

    def __post_init__(self) -> None:
        _check_unit(self.created_at_unit, "items.created_at_unit")
        if not self.category_separator:
            raise MappingError("items.category_separator must not be empty")

    @property
    def columns(self) -> list[str]:
        names = ("id", "title", "description", "category", "brand", "price", "currency", "location")
        cols = [getattr(self, n) for n in names] + [self.condition, self.created_at, self.image_url]
        return [c for c in cols if c is not None]


@dataclass(frozen=True)
class ImportMapping(Record):
    events: EventsMapping
    items: ItemsMapping | None = None
    missing_items: str = "add"  # add: catalog rows with unknown fields; reject: reason unknown_item

    def __post_init__(self) -> None:
        if self.missing_items not in MISSING_ITEMS:
            raise MappingError(f"missing_items must be one of {', '.join(MISSING_ITEMS)}, got {self.missing_items!r}")


def _check_unit(unit: str, name: str) -> None:
    if unit not in TIMESTAMP_UNITS:
        raise MappingError(f"{name} must be one of {', '.join(TIMESTAMP_UNITS)}, got {unit!r}")


def _check_types(values: Any, name: str) -> None:
    bad = sorted({v for v in values if v not in EVENT_TYPES}, key=str)
    if bad:
        raise MappingError(f"{name}: {bad} are not event types ({', '.join(EVENT_TYPES)})")


def parse_pairs(text: str, name: str) -> dict[str, str]:
    """`"a=b,c=d"` -> {"a": "b", "c": "d"} (for --event-map and --rating-thresholds)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise MappingError(f"{name}: expected KEY=VALUE pairs separated by commas, got {part!r} in {text!r}")
        if key.strip() in out:
            raise MappingError(f"{name}: {key.strip()!r} given twice in {text!r}")
        out[key.strip()] = value.strip()
    if not out:
        raise MappingError(f"{name}: no KEY=VALUE pairs in {text!r}")
    return out


def parse_thresholds(raw: Mapping[str, Any], name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            raise MappingError(f"{name}: {key} = {value!r} is not a number")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise MappingError(f"{name}: {key} = {value!r} is not a number") from None
    return out


_FILE_KEYS = {f.name for f in dataclasses.fields(FileOptions)}


def _section(cls: type, raw: Any, name: str) -> dict[str, Any]:
    """A TOML table as constructor arguments of `cls`; unknown keys are an error."""
    if not isinstance(raw, dict):
        raise MappingError(f"[{name}] must be a table")
    known = {f.name for f in dataclasses.fields(cls) if f.name != "file"} | _FILE_KEYS
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MappingError(f"[{name}]: unknown key(s) {unknown}; known: {sorted(known)}")
    return dict(raw)


def read_mapping_file(path: Path) -> dict[str, Any]:
    """The mapping file as {"events": {...}, "items": {...}, "missing_items": ...} (flat keys)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"events", "items", "missing_items"})
    if unknown:
        raise MappingError(f"mapping file {path}: unknown key(s) {unknown}; known: events, items, missing_items")
    out: dict[str, Any] = {"events": {}, "items": {}}
    if "events" in data:
        out["events"] = _section(EventsMapping, data["events"], "events")
    if "items" in data:
        out["items"] = _section(ItemsMapping, data["items"], "items")
    if "missing_items" in data:
        out["missing_items"] = data["missing_items"]
    return out


def _split_file(cls: type, values: dict[str, Any], name: str) -> Any:
    file_opts = FileOptions(**{k: values.pop(k) for k in list(values) if k in _FILE_KEYS})
    if file_opts.format is not None and file_opts.format not in FORMATS:
        raise MappingError(f"{name}.format must be one of {', '.join(FORMATS)}, got {file_opts.format!r}")
    try:
        return cls(**values, file=file_opts)
    except TypeError as exc:
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values
        ]
        if required:
            raise MappingError(f"{name}: no column given for {required} (flag or mapping file)") from None
        raise MappingError(f"{name}: {exc}") from None


def build_mapping(
    file_values: Mapping[str, Any] | None,
    events_flags: Mapping[str, Any],
    items_flags: Mapping[str, Any],
    missing_items: str | None,
    has_items_file: bool,
) -> ImportMapping:
    """Merge the mapping file with the flags (a flag that is not None wins) and validate.

    Without an items `id` column the events' item column name is used (same name in both
    files, as in MovieLens)."""
    file_values = file_values or {}
    events = {**file_values.get("events", {}), **{k: v for k, v in events_flags.items() if v is not None}}
    items = {**file_values.get("items", {}), **{k: v for k, v in items_flags.items() if v is not None}}
    if isinstance(events.get("event_map"), str):
        events["event_map"] = parse_pairs(events["event_map"], "event_map")
    if isinstance(events.get("rating_thresholds"), str):
        events["rating_thresholds"] = parse_pairs(events["rating_thresholds"], "rating_thresholds")
    if events.get("rating_thresholds") is not None:
        events["rating_thresholds"] = parse_thresholds(events["rating_thresholds"], "rating_thresholds")
    if events.get("event_map") is not None:
        events["event_map"] = {str(k): str(v) for k, v in events["event_map"].items()}
    ev = _split_file(EventsMapping, events, "events")
    it = None
    if has_items_file:
        items.setdefault("id", ev.item)
        it = _split_file(ItemsMapping, items, "items")
    elif items:
        raise MappingError(f"items columns given ({sorted(items)}) but no items file (--items)")
    mi = missing_items if missing_items is not None else file_values.get("missing_items")
    return ImportMapping(events=ev, items=it, **({"missing_items": mi} if mi is not None else {}))
