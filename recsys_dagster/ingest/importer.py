"""`recsys import`: a user's interaction logs (and optional items file) -> landing partitions.

Reads CSV / TSV / Parquet / JSONL (optionally .gz, local or s3://) in chunks with pyarrow
(`ingest/sources.py`), maps columns per an `ImportMapping` (`ingest/mapping.py`) with
vectorised conversions (`ingest/columns.py`) and writes what the landing contract expects
(docs/CONTRACTS.md):

- `landing/events/dt=D/part-import-00000.jsonl.gz` for every day D from the first to the
  last event day (UTC), an empty (valid gzip, zero lines) file on days without events;
- the catalog once, `landing/catalog/dt=<first day>/catalog.jsonl.gz`.

Event ids are `<12 hex of sha1(source uri)>-<record number>`, so importing the same files
again gives the same ids, and a re-import replaces what the previous one wrote (every
`part-import-*` file and the catalog snapshot it wrote, recorded in
`landing/_import/manifest.json`); other producers' files are kept. Every input row ends as
an event / catalog item or as a line of the rejects file (source, row, reason, detail, raw
row). Fields the data lacks get explicit unknown values (`unknown`, or null where the
contract allows it), never invented ones; the report names each of them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dagster.contract import (
    CATALOG_FIELDS,
    CATEGORY_SEPARATOR,
    CONDITIONS,
    DEVICE_TYPES,
    EVENT_FIELDS,
    EVENT_TYPES,
    LANDING_CATALOG,
    LANDING_DEVICE_TYPES,
    LANDING_EVENTS,
    UNKNOWN,
    day_prefix,
)
from recsys_dagster.ingest import columns as C
from recsys_dagster.ingest.mapping import EventsMapping, ImportMapping, ItemsMapping
from recsys_dagster.ingest.sources import Chunk, FastPathFailed, Reader, S3Options, Source, resolve_source
from recsys_dagster.ingest.validate import CATALOG_SCHEMA
from recsys_dagster.lake import Lake
from recsys_dagster.records import Record

IMPORT_PART_PREFIX = "part-import-"
CATALOG_FILE = "catalog.jsonl.gz"
IMPORT_MANIFEST = "landing/_import/manifest.json"  # hidden from readers (leading `_`)
ROWS_PER_PART = 1_000_000
GZIP_LEVEL = 6
WRITE_THREADS = 4
MAX_CATEGORY_LEVELS = 3

# Why an input row is rejected, in the order the checks apply (the first failing one wins).
EVENT_REJECT_REASONS: tuple[str, ...] = (
    "malformed_row",
    "missing_user",
    "missing_item",
    "missing_timestamp",
    "invalid_timestamp",
    "missing_event_type",
    "unmapped_event_type",
    "missing_rating",
    "rating_not_numeric",
    "rating_below_thresholds",
    "unknown_item",
)
ITEM_REJECT_REASONS: tuple[str, ...] = (
    "malformed_row",
    "missing_item_id",
    "invalid_price",
    "invalid_created_at",
    "duplicate_item_id",
)
_REASONS = {"events": EVENT_REJECT_REASONS, "items": ITEM_REJECT_REASONS}


class ImportDataError(ValueError):
    """The import cannot go on (no valid events, a column that is not there, a lake conflict)."""


# --- report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceReport(Record):
    source: str
    kind: str  # events | items
    format: str
    rows_read: int
    fallback: str  # "" when pyarrow read the file, else why it could not (then read record by record)
    timestamp: str  # how the time column was read


@dataclass(frozen=True)
class ImportReport(Record):
    lake: str
    sources: list[dict[str, Any]]  # SourceReport per file
    rows_read: int  # interaction records, malformed ones included
    events_written: int
    events_by_type: dict[str, int]
    event_rejects: dict[str, int]  # reason -> rows
    item_rows_read: int
    item_rejects: dict[str, int]
    items_from_file: int
    items_added: int  # referenced by interactions, absent from the items file, added with unknown fields
    missing_items: str  # add | reject
    catalog_items: int
    users: int
    items_with_events: int
    first_day: str
    last_day: str
    days: int
    empty_days: int
    empty_day_sample: list[str]
    rejects_path: str
    catalog_key: str
    event_files: int
    removed_files: list[str]  # a previous import's files no longer written
    notes: list[str]  # every unknown value, default and interpretation, in words
    mapping: dict[str, Any]

    @property
    def rejects(self) -> int:
        return sum(self.event_rejects.values()) + sum(self.item_rejects.values())


# --- rejects -----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def reject_line(kind: str, source: str, row: int, reason: str, detail: str, raw: Any) -> str:
    return json.dumps(
        {"kind": kind, "source": source, "row": row, "reason": reason, "detail": detail, "raw": raw},
        ensure_ascii=False,
        default=_json_default,
    )


def _raw_rows(chunk: Chunk, idx: np.ndarray) -> list[dict[str, Any]]:
    if chunk.originals is not None:
        return [chunk.originals[i] for i in idx.tolist()]
    if not chunk.table.num_columns:
        return [{} for _ in idx]
    return chunk.table.take(pa.array(idx, pa.int64())).to_pylist()


@dataclass
class _FileState:
    """What one pass over a file learned and produced (discarded if the pass restarts)."""

    rows: int = 0
    unit: str | None = None
    unit_note: str = ""
    naive: int = 0
    seen_columns: set[str] = field(default_factory=set)
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (row, JSON line)
    reasons: Counter[str] = field(default_factory=Counter)
    values: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, value) mapped to unknown
    counts: Counter[str] = field(default_factory=Counter)
    # Per pass, so a re-read on the exact path does not take the first pass's ids as duplicates.
    first_row: dict[str, int] = field(default_factory=dict)  # item id -> row of its first valid copy


def _column(chunk: Chunk, name: str, src: Source, state: _FileState) -> pa.Array:
    """A mapped column of the chunk. CSV/TSV/Parquet have a fixed set of columns, so a
    missing one is an error at once; a JSON line may lack a key (null there)."""
    if name in chunk.table.column_names:
        state.seen_columns.add(name)
        return C.combined(chunk.table.column(name))
    if src.format != "jsonl":
        raise ImportDataError(f"{src.uri}: no column {name!r} (columns: {', '.join(chunk.table.column_names)})")
    return pa.nulls(len(chunk.rows), pa.string())


def _apply_reasons(n: int, checks: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Reason index per row (0 = valid); the first failing check, in list order, wins."""
    code = np.zeros(n, dtype=np.int16)
    for k in range(len(checks), 0, -1):
        code[checks[k - 1][1]] = k
    return code


def _emit_rejects(
    kind: str,
    chunk: Chunk,
    src: Source,
    code: np.ndarray,
    checks: list[tuple[str, np.ndarray]],
    detail: Callable[[str, dict[str, Any]], str],
    state: _FileState,
) -> None:
    for m in chunk.malformed:
        state.rejects.append((m.row, reject_line(kind, src.uri, m.row, "malformed_row", m.detail, m.raw)))
        state.reasons["malformed_row"] += 1
    unlisted = [name for name, _ in checks if name not in _REASONS[kind]]
    if unlisted:
        raise AssertionError(f"reject reasons {unlisted} are not in the {kind} reasons")
    bad = np.flatnonzero(code)
    if not len(bad):
        return
    for i, raw in zip(bad.tolist(), _raw_rows(chunk, bad), strict=True):
        reason = checks[code[i] - 1][0]
        row = int(chunk.rows[i])
        state.rejects.append((row, reject_line(kind, src.uri, row, reason, detail(reason, raw), raw)))
        state.reasons[reason] += 1


def _timestamps(arr: pa.Array, stated: str, state: _FileState, what: str) -> C.Timestamps:
    """Parse a time column, deciding the unit on the first chunk with values (once per file)."""
    if state.unit is None:
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            found = C.detect_unit(arr)
            if found is not None:
                state.unit = "native"
                state.unit_note = f"{what}: a timestamp column (e.g. {found[1]})"
        elif stated != "auto":
            state.unit = stated
            state.unit_note = f"{what}: {C.UNIT_NAMES[stated]} (stated)"
        else:
            found = C.detect_unit(arr)
            if found is not None:
                state.unit = found[0]
                state.unit_note = f"{what}: {C.UNIT_NAMES[found[0]]} (detected from the values, e.g. {found[1]})"
    if state.unit is None:  # no value in this chunk at all: every row is missing its time
        missing = C.is_null(C.text(arr, what)) if not pa.types.is_temporal(arr.type) else C.is_null(arr)
        return C.Timestamps(np.zeros(len(arr), dtype=np.int64), missing, ~missing, np.zeros(len(arr), dtype=bool))
    return C.timestamps(arr, state.unit)


def _read_file(
    reader: Reader, process: Callable[[Chunk, _FileState], pa.Table | None]
) -> tuple[list[pa.Table], _FileState, str]:
    """All chunks of a file through `process`; when pyarrow cannot parse the file, what was
    read is dropped and the file is read again on the exact path. Returns (tables, state,
    why pyarrow could not read it or "")."""
    why = ""
    for exact in (False, True):
        state = _FileState()
        tables: list[pa.Table] = []
        try:
            for chunk in reader.chunks(exact=exact):
                state.rows += len(chunk.rows) + len(chunk.malformed)
                out = process(chunk, state)
                if out is not None and out.num_rows:
                    tables.append(out)
        except FastPathFailed as exc:
            why = str(exc).splitlines()[0]
            continue
        return tables, state, why
    raise AssertionError("the exact path does not raise FastPathFailed")


def _check_seen(src: Source, state: _FileState, names: list[str]) -> None:
    """JSONL: a mapped key that no line of the file has is a mapping error, not N rejects."""
    if src.format == "jsonl" and state.rows:
        never = [n for n in names if n not in state.seen_columns]
        if never:
            raise ImportDataError(f"{src.uri}: no line has the key(s) {never}")


# --- events ------------------------------------------------------------------------------


@dataclass
class _EventsContext:
    mapping: EventsMapping
    known_items: pa.Array | None  # items of the items file, when unknown items are rejected


def _event_types(chunk: Chunk, src: Source, m: EventsMapping, state: _FileState) -> tuple[pa.Array, list]:
    """(event_type with nulls where it cannot be had, the reject checks for those rows)."""
    n = len(chunk.rows)
    if m.event_type is not None:
        return pa.array([m.event_type] * n, pa.string()), []
    if m.event is not None:
        values = C.text(_column(chunk, m.event, src, state), m.event)
        table = m.event_map if m.event_map is not None else {t: t for t in EVENT_TYPES}
        idx = pc.index_in(values, value_set=pa.array(list(table), pa.string()))
        types = pa.array(list(table.values()), pa.string()).take(idx)
        missing = C.is_null(values)
        return types, [("missing_event_type", missing), ("unmapped_event_type", ~missing & C.is_null(types))]
    assert m.rating is not None and m.rating_thresholds is not None
    nums = C.numbers(_column(chunk, m.rating, src, state))
    ladder = sorted(m.rating_thresholds.items(), key=lambda kv: kv[1])  # ascending: the highest match wins
    labels = [t for t, _ in ladder] + [m.rating_below or ""]
    code = np.full(n, -1, dtype=np.int64)
    for i, (_, lowest) in enumerate(ladder):
        code[nums.values >= lowest] = i
    number = ~nums.missing & ~nums.bad
    below = number & (code < 0)
    if m.rating_below is not None:
        code[below] = len(ladder)
        below = np.zeros(n, dtype=bool)
    types = pa.array(labels, pa.string()).take(pa.array(code, mask=code < 0))
    return types, [
        ("missing_rating", nums.missing),
        ("rating_not_numeric", nums.bad),
        ("rating_below_thresholds", below),
    ]


def _devices(chunk: Chunk, src: Source, m: EventsMapping, state: _FileState, take: pa.Array) -> pa.Array:
    """device_type of the kept rows: a contract value (any case), else `unknown`, counted."""
    if m.device is None:
        return pa.array([UNKNOWN] * len(take), pa.string())
    values = pc.utf8_lower(C.text(_column(chunk, m.device, src, state), m.device).take(take))
    known = pc.fill_null(pc.is_in(values, value_set=pa.array(LANDING_DEVICE_TYPES)), False)
    other = values.filter(pc.and_(pc.invert(known), pc.is_valid(values)))
    for vc in pc.value_counts(other).to_pylist():
        state.values[("device", vc["values"])] += vc["counts"]
    state.counts["device_empty"] += int(C.is_null(values).sum())
    return pc.if_else(known, values, pa.scalar(UNKNOWN))


def _events_chunk(chunk: Chunk, src: Source, ctx: _EventsContext, token: str, state: _FileState) -> pa.Table | None:
    m = ctx.mapping
    n = len(chunk.rows)
    if n == 0:
        _emit_rejects("events", chunk, src, np.zeros(0, np.int16), [], lambda r, raw: "", state)
        return None
    user = C.text(_column(chunk, m.user, src, state), m.user)
    item = C.text(_column(chunk, m.item, src, state), m.item)
    ts = _timestamps(_column(chunk, m.timestamp, src, state), m.timestamp_unit, state, "timestamp")
    types, type_checks = _event_types(chunk, src, m, state)
    checks = [
        ("missing_user", C.is_null(user)),
        ("missing_item", C.is_null(item)),
        ("missing_timestamp", ts.missing),
        ("invalid_timestamp", ts.bad),
        *type_checks,
    ]
    if ctx.known_items is not None:
        unknown = ~C.is_null(item) & ~C.as_bool(pc.is_in(item, value_set=ctx.known_items))
        checks.append(("unknown_item", unknown))
    code = _apply_reasons(n, checks)

    def detail(reason: str, raw: dict[str, Any]) -> str:
        col = {
            "missing_user": m.user,
            "missing_item": m.item,
            "missing_timestamp": m.timestamp,
            "invalid_timestamp": m.timestamp,
            "missing_event_type": m.event,
            "unmapped_event_type": m.event,
            "missing_rating": m.rating,
            "rating_not_numeric": m.rating,
            "rating_below_thresholds": m.rating,
            "unknown_item": m.item,
        }[reason]
        value = raw.get(col) if col else None
        if reason.startswith("missing_"):
            return f"{col!r} is empty"
        if reason == "invalid_timestamp":
            unit = C.UNIT_NAMES.get(state.unit or "", "a timestamp")
            return f"{col} {value!r} is not {unit} between 1970 and 2099"
        if reason == "unmapped_event_type":
            keys = list(m.event_map) if m.event_map is not None else list(EVENT_TYPES)
            return f"{col} {value!r} is not one of {keys} (add it to the event map)"
        if reason == "rating_not_numeric":
            return f"{col} {value!r} is not a number"
        if reason == "rating_below_thresholds":
            lowest = min((m.rating_thresholds or {}).values())
            return f"{col} {value!r} is below the lowest threshold {lowest:g} and no rating_below type is set"
        return f"{col} {value!r} is not in the items file"

    _emit_rejects("events", chunk, src, code, checks, detail, state)
    keep = np.flatnonzero(code == 0)
    state.naive += int(ts.naive[keep].sum())
    if not len(keep):
        return None
    take = pa.array(keep, pa.int64())
    session = (
        C.text(_column(chunk, m.session, src, state), m.session).take(take)
        if m.session is not None
        else pa.nulls(len(keep), pa.string())
    )
    rows = pa.array(chunk.rows[keep], pa.int64()).cast(pa.string())
    return pa.table(
        {
            "event_id": pc.binary_join_element_wise(f"{token}-", rows, ""),
            "user_id": user.take(take),
            "session_id": session,
            "item_id": item.take(take),
            "event_type": types.take(take),
            "ts": pa.array(ts.us[keep], pa.int64()),
            "device_type": _devices(chunk, src, m, state, take),
        }
    )


def source_token(uri: str) -> str:
    """The event-id prefix of a source: the same file (same URI) always gives the same ids."""
    return hashlib.sha1(uri.encode()).hexdigest()[:12]


# --- items -------------------------------------------------------------------------------


def category_path(value: str, separator: str) -> tuple[str | None, bool]:
    """A category value -> (contract path of at most 3 levels or None, whether levels were cut).

    Split on the mapping's separator (e.g. MovieLens "Comedy|Drama") and on the contract's
    " > "; blank levels are dropped."""
    levels = [lv.strip() for part in value.split(separator) for lv in part.split(CATEGORY_SEPARATOR)]
    levels = [lv for lv in levels if lv]
    if not levels:
        return None, False
    return CATEGORY_SEPARATOR.join(levels[:MAX_CATEGORY_LEVELS]), len(levels) > MAX_CATEGORY_LEVELS


def _categories(arr: pa.Array, separator: str, name: str, state: _FileState) -> pa.Array:
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr, separator = pc.binary_join(arr, "\x1f"), "\x1f"
    values = C.text(arr, name)
    enc = values.dictionary_encode()
    mapped = [category_path(v, separator) for v in enc.dictionary.to_pylist()]
    paths = pa.array([p for p, _ in mapped], pa.string()).take(enc.indices)
    cut = pa.array([c for _, c in mapped], pa.bool_()).take(enc.indices)
    state.counts["category_cut"] += int(C.as_bool(cut).sum())
    state.counts["category_unknown"] += int(C.is_null(paths).sum())
    return pc.fill_null(paths, UNKNOWN)


def _conditions(arr: pa.Array, name: str, state: _FileState) -> pa.Array:
    values = C.text(arr, name)
    enc = values.dictionary_encode()
    norm = [v.lower().replace("-", "_").replace(" ", "_") for v in enc.dictionary.to_pylist()]
    out = pa.array([v if v in CONDITIONS else None for v in norm], pa.string()).take(enc.indices)
    other = values.filter(pa.array(C.is_null(out) & ~C.is_null(values)))
    for v, k in Counter(other.to_pylist()).items():
        state.values[("condition", v)] += k
    return pc.fill_null(out, UNKNOWN)


@dataclass
class _ItemsContext:
    mapping: ItemsMapping


def _optional_text(chunk: Chunk, name: str | None, src: Source, state: _FileState, strip: bool = True) -> pa.Array:
    if name is None:
        return pa.nulls(len(chunk.rows), pa.string())
    return C.text(_column(chunk, name, src, state), name, strip=strip)


def _items_chunk(chunk: Chunk, src: Source, ctx: _ItemsContext, state: _FileState) -> pa.Table | None:
    m = ctx.mapping
    n = len(chunk.rows)
    if n == 0:
        _emit_rejects("items", chunk, src, np.zeros(0, np.int16), [], lambda r, raw: "", state)
        return None
    ids = C.text(_column(chunk, m.id, src, state), m.id)
    if m.price is not None:
        price = C.numbers(_column(chunk, m.price, src, state))
        bad_price = price.bad | (~price.missing & (np.nan_to_num(price.values) < 0))
    else:
        price = C.Numbers(np.full(n, np.nan), np.ones(n, dtype=bool), np.zeros(n, dtype=bool))
        bad_price = price.bad
    if m.created_at is not None:
        created = _timestamps(_column(chunk, m.created_at, src, state), m.created_at_unit, state, "created_at")
    else:
        none = np.zeros(n, dtype=bool)
        created = C.Timestamps(np.zeros(n, np.int64), ~none, none, none)
    checks = [("missing_item_id", C.is_null(ids)), ("invalid_price", bad_price), ("invalid_created_at", created.bad)]
    code = _apply_reasons(n, checks)
    # Last, as for events: a later copy of an item that was itself rejected is not a duplicate.
    dup = np.zeros(n, dtype=bool)
    id_list = ids.to_pylist()
    for i in np.flatnonzero(code == 0).tolist():
        if id_list[i] in state.first_row:
            dup[i] = True
        else:
            state.first_row[id_list[i]] = int(chunk.rows[i])
    checks.append(("duplicate_item_id", dup))
    code[dup] = len(checks)

    def detail(reason: str, raw: dict[str, Any]) -> str:
        if reason == "missing_item_id":
            return f"{m.id!r} is empty"
        if reason == "invalid_price":
            return f"{m.price} {raw.get(m.price or '')!r} is not a number >= 0"
        if reason == "invalid_created_at":
            unit = C.UNIT_NAMES.get(state.unit or "", "a timestamp")
            return f"{m.created_at} {raw.get(m.created_at or '')!r} is not {unit} between 1970 and 2099"
        item_id = raw.get(m.id)
        return f"item {item_id!r} already given on row {state.first_row.get(str(item_id).strip(), '?')}"

    _emit_rejects("items", chunk, src, code, checks, detail, state)
    keep = np.flatnonzero(code == 0)
    state.naive += int(created.naive[keep].sum())
    state.counts["price_unknown"] += int(price.missing[keep].sum()) if m.price is not None else 0
    if not len(keep):
        return None
    take = pa.array(keep, pa.int64())
    item_ids = ids.take(take)
    if m.title is not None:
        title = C.text(_column(chunk, m.title, src, state), m.title).take(take)
        state.counts["title_from_id"] += int(C.is_null(title).sum())
        title = pc.coalesce(title, item_ids)
    else:
        title = item_ids
    if m.category is not None:
        category = _categories(
            _column(chunk, m.category, src, state).take(take), m.category_separator, m.category, state
        )
    else:
        category = pa.array([UNKNOWN] * len(keep), pa.string())
    if m.condition is not None:
        condition = _conditions(_column(chunk, m.condition, src, state).take(take), m.condition, state)
    else:
        condition = pa.array([UNKNOWN] * len(keep), pa.string())
    currency_default = pa.scalar(m.currency_code or UNKNOWN)
    currency = pc.fill_null(_optional_text(chunk, m.currency, src, state).take(take), currency_default)
    location = _optional_text(chunk, m.location, src, state).take(take)
    state.counts["location_unknown"] += int(C.is_null(location).sum()) if m.location is not None else 0
    created_us = pa.array(created.us[keep], pa.int64(), mask=created.missing[keep])
    return pa.table(
        {
            "item_id": item_ids,
            "title": title,
            "description": _optional_text(chunk, m.description, src, state, strip=False).take(take),
            "category_path": category,
            "price": pa.array(price.values[keep], pa.float64(), mask=price.missing[keep]),
            "currency": currency,
            "brand": _optional_text(chunk, m.brand, src, state).take(take),
            "location": pc.fill_null(location, UNKNOWN),
            "condition": condition,
            "image_url": _optional_text(chunk, m.image_url, src, state).take(take),
            "created_us": created_us,
        }
    )


# The landing catalog's columns (the validated schema's, minus what validation derives),
# with `created_at` held as epoch microseconds until it is written.
CATALOG_COLUMNS = pa.schema(
    [*(CATALOG_SCHEMA.field(n) for n in CATALOG_FIELDS if n != "created_at"), ("created_us", pa.int64())]
)


def unknown_items(item_ids: pa.Array) -> pa.Table:
    """Catalog rows for items the data says nothing about: explicit unknowns, nulls where the
    contract allows them, title = the item id (the contract needs a non-empty title)."""
    n = len(item_ids)
    unknown = pa.array([UNKNOWN] * n, pa.string())
    nulls = pa.nulls(n, pa.string())
    return pa.table(
        {
            "item_id": item_ids,
            "title": item_ids,
            "description": nulls,
            "category_path": unknown,
            "price": pa.nulls(n, pa.float64()),
            "currency": unknown,
            "brand": nulls,
            "location": unknown,
            "condition": unknown,
            "image_url": nulls,
            "created_us": pa.nulls(n, pa.int64()),
        },
        schema=CATALOG_COLUMNS,
    )


# --- landing lines -----------------------------------------------------------------------


def event_lines(events: pa.Table) -> pa.Array:
    """Landing event objects (docs/CONTRACTS.md), one JSON text per row."""
    encoded = {
        "event_id": C.json_strings(events.column("event_id")),
        "user_id": C.json_strings(events.column("user_id")),
        "session_id": C.json_strings(events.column("session_id")),
        "item_id": C.json_strings(events.column("item_id")),
        "event_type": C.json_strings(events.column("event_type")),
        "timestamp": C.json_strings(C.iso_utc(events.column("ts").to_numpy())),
        "device_type": C.json_strings(events.column("device_type")),
    }
    return C.json_objects([(f, encoded[f]) for f in EVENT_FIELDS])


def catalog_lines(catalog: pa.Table) -> pa.Array:
    encoded = {f: C.json_strings(catalog.column(f)) for f in CATALOG_FIELDS if f not in ("price", "created_at")}
    encoded["price"] = C.json_numbers(catalog.column("price"))
    encoded["created_at"] = C.json_strings(C.iso_utc(catalog.column("created_us").to_numpy()))
    return C.json_objects([(f, encoded[f]) for f in CATALOG_FIELDS])


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def _day(us: int) -> date:
    return date(1970, 1, 1) + timedelta(days=us // C.US_PER_DAY)


# --- the import ----------------------------------------------------------------------------


@dataclass
class _Read:
    """What the files of one kind gave: normalized tables and their accounting."""

    tables: list[pa.Table] = field(default_factory=list)
    reports: list[SourceReport] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    values: Counter[tuple[str, str]] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    naive: int = 0


def _read_all(
    sources: Sequence[Source],
    kind: str,
    s3: S3Options,
    process: Callable[[Chunk, Source, _FileState], pa.Table | None],
    required: list[str],
    time_columns: tuple[str, ...],
    rejects: Any,
) -> _Read:
    out = _Read()
    for src in sources:
        reader = Reader(src, s3, time_columns)
        tables, state, fallback = _read_file(reader, lambda chunk, st, src=src: process(chunk, src, st))
        _check_seen(src, state, required)
        for _, line in sorted(state.rejects, key=lambda r: r[0]):
            rejects.write(line + "\n")
        out.tables.extend(tables)
        out.reasons.update(state.reasons)
        out.values.update(state.values)
        out.counts.update(state.counts)
        out.rows += state.rows
        out.naive += state.naive
        out.reports.append(SourceReport(src.uri, kind, src.format, state.rows, fallback, state.unit_note or "-"))
    return out


def import_logs(
    lake: Lake,
    events: Sequence[str],
    mapping: ImportMapping,
    *,
    rejects_path: Path | str,
    items: str | None = None,
    s3: S3Options | None = None,
) -> ImportReport:
    """Import interaction files (and an optional items file) into `lake`'s landing zone.

    Nothing is written to the lake unless every file was read; the rejects file is written
    in any case (empty when nothing was rejected)."""
    s3 = s3 or S3Options()
    if not events:
        raise ImportDataError("no interaction file given")
    if (items is None) != (mapping.items is None):
        raise ImportDataError("an items file and its mapping go together")
    if items is None and mapping.missing_items == "reject":
        raise ImportDataError("missing_items = reject needs an items file: without one every item is unknown")
    event_sources = [resolve_source(p, mapping.events.file) for p in events]
    dup = sorted({s.uri for s in event_sources if [t.uri for t in event_sources].count(s.uri) > 1})
    if dup:
        raise ImportDataError(f"the same file is given twice: {dup}")
    item_source = resolve_source(items, mapping.items.file) if items is not None and mapping.items else None
    rejects_file = Path(rejects_path).expanduser().resolve()
    rejects_file.parent.mkdir(parents=True, exist_ok=True)
    with open(rejects_file, "w", encoding="utf-8") as rejects:
        catalog_from_file = None
        item_read = _Read()
        items_mapping = mapping.items
        if item_source is not None and items_mapping is not None:
            ictx = _ItemsContext(items_mapping)
            item_read = _read_all(
                [item_source],
                "items",
                s3,
                lambda chunk, src, st: _items_chunk(chunk, src, ictx, st),
                items_mapping.columns,
                (items_mapping.created_at,) if items_mapping.created_at else (),
                rejects,
            )
            catalog_from_file = (
                pa.concat_tables(item_read.tables) if item_read.tables else CATALOG_COLUMNS.empty_table()
            )
        known = None
        if mapping.missing_items == "reject" and catalog_from_file is not None:
            known = catalog_from_file.column("item_id").combine_chunks()
        ectx = _EventsContext(mapping.events, known)
        ev_read = _read_all(
            event_sources,
            "events",
            s3,
            lambda chunk, src, st: _events_chunk(chunk, src, ectx, source_token(src.uri), st),
            mapping.events.columns,
            (mapping.events.timestamp,),
            rejects,
        )
    if not ev_read.tables:
        raise ImportDataError(
            f"no valid interaction in {len(event_sources)} file(s) ({ev_read.rows} rows read); "
            f"rejects by reason {dict(ev_read.reasons)} in {rejects_file}"
        )
    ev = pa.concat_tables(ev_read.tables)
    ev = ev.take(pc.sort_indices(ev, sort_keys=[("ts", "ascending"), ("event_id", "ascending")]))
    ts = ev.column("ts").to_numpy()
    first_us = int(ts[0])
    first_day, last_day = _day(first_us), _day(int(ts[-1]))

    catalog, n_added, created_missing = _catalog(catalog_from_file, ev, first_us)
    if n_added and mapping.missing_items == "reject":
        raise AssertionError("interactions with unknown items were rejected while reading")

    report_notes = _notes(mapping, item_source, ev_read, item_read, n_added, created_missing)
    written, removed, catalog_key, day_counts, foreign = _write_landing(lake, ev, catalog, first_day, last_day)
    if foreign:
        report_notes.append(
            f"{foreign} landing file(s) of other producers lie in {first_day}..{last_day}: kept, and the "
            "pipeline reads them too"
        )
    empty = [d for d, k in day_counts.items() if k == 0]
    report = ImportReport(
        lake=lake.uri,
        sources=[r.to_dict() for r in item_read.reports + ev_read.reports],
        rows_read=ev_read.rows,
        events_written=ev.num_rows,
        events_by_type={t: int(k) for t, k in _value_counts(ev.column("event_type")).items()},
        event_rejects=dict(sorted(ev_read.reasons.items())),
        item_rows_read=item_read.rows,
        item_rejects=dict(sorted(item_read.reasons.items())),
        items_from_file=catalog_from_file.num_rows if catalog_from_file is not None else 0,
        items_added=n_added,
        missing_items=mapping.missing_items,
        catalog_items=catalog.num_rows,
        users=int(pc.count_distinct(ev.column("user_id")).as_py()),
        items_with_events=int(pc.count_distinct(ev.column("item_id")).as_py()),
        first_day=first_day.isoformat(),
        last_day=last_day.isoformat(),
        days=len(day_counts),
        empty_days=len(empty),
        empty_day_sample=empty[:10],
        rejects_path=str(rejects_file),
        catalog_key=catalog_key,
        event_files=len(written) - 1,
        removed_files=removed,
        notes=report_notes,
        mapping=mapping.to_dict(),
    )
    lake.write_json(IMPORT_MANIFEST, {"state": "complete", "catalog_keys": [catalog_key], "report": report.to_dict()})
    return report


def _catalog(from_file: pa.Table | None, ev: pa.Table, first_us: int) -> tuple[pa.Table, int, int]:
    """The items file's rows, then the items only the interactions name (unknown fields);
    a missing created_at is the item's first interaction, else the import's first event.
    Returns (catalog, items added, created_at values filled in)."""
    catalog = from_file if from_file is not None else CATALOG_COLUMNS.empty_table()
    event_items = pc.unique(ev.column("item_id"))
    missing = event_items.filter(pc.invert(pc.is_in(event_items, value_set=catalog.column("item_id"))))
    if len(missing):
        catalog = pa.concat_tables([catalog, unknown_items(missing.take(pc.sort_indices(missing)))])
    firsts = ev.group_by("item_id").aggregate([("ts", "min")])
    pos = pc.index_in(catalog.column("item_id"), value_set=firsts.column("item_id"))
    first_seen = pc.fill_null(firsts.column("ts_min").take(pos), first_us)
    created = catalog.column("created_us")
    index = catalog.schema.get_field_index("created_us")
    return catalog.set_column(index, "created_us", pc.coalesce(created, first_seen)), len(missing), created.null_count


def _value_counts(col: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    vc = pc.value_counts(col)
    counts = {v["values"]: v["counts"] for v in vc.to_pylist()}
    return {t: counts[t] for t in EVENT_TYPES if t in counts}


def _write_landing(
    lake: Lake, ev: pa.Table, catalog: pa.Table, first_day: date, last_day: date
) -> tuple[list[str], list[str], str, dict[str, int], int]:
    """Write the catalog snapshot and every day's events; then remove what a previous import
    wrote that this one did not. Returns (keys written, keys removed, catalog key, events per
    day, other producers' files in the range)."""
    catalog_key = f"{day_prefix(LANDING_CATALOG, first_day.isoformat())}/{CATALOG_FILE}"
    previous = lake.read_json(IMPORT_MANIFEST) if lake.exists(IMPORT_MANIFEST) else {}
    claimed = list(dict.fromkeys([*previous.get("catalog_keys", []), catalog_key]))
    if lake.exists(catalog_key) and catalog_key not in previous.get("catalog_keys", []):
        raise ImportDataError(
            f"{lake.uri}/{catalog_key} exists and was not written by `recsys import`: importing would replace "
            "another producer's catalog. Import into another lake (--lake) or remove that file first."
        )
    existing = lake.list_keys(LANDING_EVENTS)
    # Claim the catalog keys before writing, so an interrupted import is cleaned up by the next.
    lake.write_json(IMPORT_MANIFEST, {"state": "writing", "catalog_keys": claimed})
    lake.put_bytes(catalog_key, _gzip(C.lines_bytes(catalog_lines(catalog))))

    days = (last_day - first_day).days + 1
    day_us = (ev.column("ts").to_numpy() // C.US_PER_DAY).astype(np.int64)
    first = (first_day - date(1970, 1, 1)).days
    bounds = np.searchsorted(day_us, np.arange(first, first + days + 1))

    def write_day(i: int) -> list[str]:
        dt = (first_day + timedelta(days=i)).isoformat()
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        keys = []
        for part, start in enumerate(range(lo, max(hi, lo + 1), ROWS_PER_PART)):
            chunk = ev.slice(start, min(ROWS_PER_PART, hi - start))
            key = f"{day_prefix(LANDING_EVENTS, dt)}/{IMPORT_PART_PREFIX}{part:05d}.jsonl.gz"
            lake.put_bytes(key, _gzip(C.lines_bytes(event_lines(chunk)) if chunk.num_rows else b""))
            keys.append(key)
        return keys

    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        event_keys = [k for keys in pool.map(write_day, range(days)) for k in keys]
    day_counts = {(first_day + timedelta(days=i)).isoformat(): int(bounds[i + 1] - bounds[i]) for i in range(days)}
    written = set(event_keys) | {catalog_key}
    stale = [k for k in existing if k.rsplit("/", 1)[-1].startswith(IMPORT_PART_PREFIX) and k not in written]
    stale += [k for k in claimed if k != catalog_key and lake.exists(k)]
    for key in stale:
        lake.delete(key)
    in_range = {day_prefix(LANDING_EVENTS, d) for d in day_counts}
    foreign = sum(
        1
        for k in existing
        if k.rsplit("/", 1)[0] in in_range and not k.rsplit("/", 1)[-1].startswith(IMPORT_PART_PREFIX)
    )
    return [catalog_key, *event_keys], sorted(stale), catalog_key, day_counts, foreign


def _top(values: Counter[tuple[str, str]], what: str, n: int = 5) -> dict[str, int]:
    picked = Counter({v: k for (w, v), k in values.items() if w == what})
    return dict(picked.most_common(n))


def _notes(
    mapping: ImportMapping,
    item_source: Source | None,
    ev_read: _Read,
    item_read: _Read,
    added: int,
    created_missing: int,
) -> list[str]:
    """Every interpretation and every explicit unknown, in words, for the report."""
    m = mapping.events
    notes = [f"{r.source}: {r.timestamp}" for r in ev_read.reports]
    notes += [_fallback_note(r) for r in ev_read.reports if r.fallback]
    if ev_read.naive:
        notes.append(f"{ev_read.naive} event time(s) had no time zone and were taken as UTC")
    if m.session is None:
        notes.append("no session column: session_id is null (sessions come from the 30-minute gap rule)")
    if m.device is None:
        notes.append(f"no device column: device_type is {UNKNOWN!r} for every event")
    else:
        other = _top(ev_read.values, "device")
        if other or ev_read.counts["device_empty"]:
            notes.append(
                f"device values outside {', '.join(DEVICE_TYPES)} set to {UNKNOWN!r}: {other}"
                f" (+{ev_read.counts['device_empty']} empty)"
            )
    if m.rating is not None and m.rating_thresholds:
        ladder = ", ".join(f">= {v:g} -> {t}" for t, v in sorted(m.rating_thresholds.items(), key=lambda kv: -kv[1]))
        below = m.rating_below or "rejected (rating_below_thresholds)"
        notes.append(f"event type from {m.rating}: {ladder}, below -> {below}")
    if m.event is not None:
        notes.append(f"event type from {m.event}: {m.event_map or 'values taken as contract event types'}")
    if m.event_type is not None:
        notes.append(f"every event has event_type {m.event_type!r} (stated)")
    it = mapping.items
    unknown_fields = (
        f"title = item id, category_path/condition/location/currency {UNKNOWN!r}, "
        "price/brand/description/image_url null, created_at = first interaction"
    )
    if item_source is None or it is None:
        notes.append(f"no items file: every item gets unknown fields ({unknown_fields})")
    else:
        notes += [f"{r.source}: {r.timestamp}" for r in item_read.reports if it.created_at is not None]
        notes += [_fallback_note(r) for r in item_read.reports if r.fallback]
        if item_read.naive:
            notes.append(f"{item_read.naive} created_at value(s) had no time zone and were taken as UTC")
        for key, text in (
            ("title", "title is the item id"),
            ("category", f"category_path is {UNKNOWN!r}"),
            ("price", "price is null (unknown, not 0)"),
            ("brand", "brand is null"),
            ("description", "description is null"),
            ("image_url", "image_url is null"),
            ("location", f"location is {UNKNOWN!r}"),
            ("condition", f"condition is {UNKNOWN!r}"),
        ):
            if getattr(it, key) is None:
                notes.append(f"no {key} column: {text}")
        if it.currency is None:
            notes.append(
                f"currency is {it.currency_code!r} for every item (stated)"
                if it.currency_code
                else f"no currency column or code: currency is {UNKNOWN!r}"
            )
        c = item_read.counts
        if c["title_from_id"]:
            notes.append(f"{c['title_from_id']} item(s) with an empty title: title is the item id")
        if c["category_cut"]:
            notes.append(f"{c['category_cut']} category value(s) with more than 3 levels: the first 3 kept")
        if it.category is not None and c["category_unknown"]:
            notes.append(f"{c['category_unknown']} item(s) with an empty category: category_path {UNKNOWN!r}")
        if c["price_unknown"]:
            notes.append(f"{c['price_unknown']} item(s) with an empty price: price null (unknown, not 0)")
        if c["location_unknown"]:
            notes.append(f"{c['location_unknown']} item(s) with an empty location: {UNKNOWN!r}")
        other = _top(item_read.values, "condition")
        if other:
            notes.append(f"condition values outside {', '.join(CONDITIONS)} set to {UNKNOWN!r}: {other}")
        if added:
            notes.append(
                f"{added} item(s) referenced by interactions are not in the items file: added with unknown "
                f"fields ({unknown_fields}); --missing-items reject rejects those interactions instead"
            )
    if created_missing:
        why = "no created_at column" if it is None or it.created_at is None else "created_at empty"
        notes.append(
            f"{why} for {created_missing} item(s): created_at is the item's first interaction "
            "(for items without interactions: the first event of the import)"
        )
    return notes


def _fallback_note(r: SourceReport) -> str:
    return f"{r.source}: pyarrow could not parse it ({r.fallback}): read record by record instead"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def format_report(r: ImportReport) -> str:
    """The report as the lines `recsys import` prints."""
    out = [f"imported into {r.lake}"]
    for s in r.sources:
        out.append(f"  {s['kind']:6} {s['source']} ({s['format']}): {_plural(s['rows_read'], 'row')} read")
    out.append(f"rows read: {r.rows_read:,} interaction(s), {r.item_rows_read:,} item row(s)")
    by_type = ", ".join(f"{t} {k:,}" for t, k in r.events_by_type.items())
    out.append(f"events written: {r.events_written:,} ({by_type})")
    if r.event_rejects or r.item_rejects:
        out.append(f"rejected: {r.rejects:,} row(s) -> {r.rejects_path}")
        for kind, reasons in (("interactions", r.event_rejects), ("items", r.item_rejects)):
            for reason, k in reasons.items():
                out.append(f"  {kind}: {reason} {k:,}")
    else:
        out.append(f"rejected: none ({r.rejects_path} is empty)")
    out.append(f"users: {r.users:,}; items with events: {r.items_with_events:,}")
    out.append(
        f"catalog: {r.catalog_items:,} item(s) ({r.items_from_file:,} from the items file, "
        f"{r.items_added:,} added with unknown fields) -> {r.catalog_key}"
    )
    sample = f" e.g. {', '.join(r.empty_day_sample)}" if r.empty_days else ""
    out.append(
        f"days: {r.first_day}..{r.last_day} ({r.days:,} day(s), {r.empty_days:,} without events{sample}); "
        f"{r.event_files:,} event file(s) written"
    )
    if r.removed_files:
        out.append(f"removed {len(r.removed_files)} file(s) of the previous import no longer produced")
    out.append("notes:")
    out += [f"  - {n}" for n in r.notes]
    return "\n".join(out)
