"""Vectorised column conversions for `recsys import`: ids, numbers, timestamps, JSON lines.

Each conversion returns the converted column with nulls where a value is missing or bad,
plus boolean masks saying which: the importer turns the masks into reject reasons, so a
bad value is never silently dropped or replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S
# Accepted event times: a value outside is a bad value, not an event from 1900 or 2200.
MIN_US = 0  # 1970-01-01
MAX_US = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * US_PER_S
# Epoch values from this magnitude on are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
MS_FROM = 1e11
US_FROM = 1e14  # microsecond / nanosecond epochs: not supported (convert them to ms or ISO first)
UNIT_FACTOR = {"s": US_PER_S, "ms": 1_000}
UNIT_NAMES = {"s": "epoch seconds", "ms": "epoch milliseconds", "iso": "ISO-8601", "native": "a timestamp column"}

_NUMBER_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
# A zone after a time part ("2015-03-02" ends in "-02" but has no zone).
_ZONE_RE = r"[Tt ]\d.*([Zz]|[+-]\d{2}(:?\d{2})?)$"
_NEEDS_ESCAPE_RE = r'["\\\x00-\x1f\x7f]'


class ColumnError(ValueError):
    """A mapped column cannot be used at all (e.g. lists where single values are needed)."""


def as_bool(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def is_null(arr: pa.Array) -> np.ndarray:
    return as_bool(pc.is_null(arr))


def combined(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def text(arr: pa.Array | pa.ChunkedArray, name: str, strip: bool = True) -> pa.Array:
    """Single values as strings (ints as "123", integral floats too); '' and blanks -> null."""
    arr = combined(arr)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_floating(t):
        arr = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, t))  # NaN / inf: no value
        if pc.all(pc.fill_null(pc.equal(pc.floor(arr), arr), True)).as_py():
            arr = arr.cast(pa.int64())
    elif pa.types.is_nested(t):
        raise ColumnError(f"column {name!r} holds {t} values; a single value per row is needed")
    if pa.types.is_large_string(t):
        arr = arr.cast(pa.string())
    elif not pa.types.is_string(t):
        arr = arr.cast(pa.string())
    if strip:
        arr = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


@dataclass
class Numbers:
    values: np.ndarray  # float64, NaN where missing or bad
    missing: np.ndarray  # bool: null, NaN or empty
    bad: np.ndarray  # bool: present but not a finite number


def numbers(arr: pa.Array | pa.ChunkedArray) -> Numbers:
    arr = combined(arr)
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = np.asarray(pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False))
        missing = np.isnan(values)  # null, or NaN as pandas writes a missing float
        bad = np.isinf(values)
        return Numbers(np.where(bad, np.nan, values), missing, bad)
    if pa.types.is_boolean(t) or pa.types.is_nested(t) or pa.types.is_temporal(t):
        missing = is_null(arr)
        return Numbers(np.full(len(arr), np.nan), missing, ~missing)
    s = text(arr, "number")
    missing = is_null(s)
    ok = as_bool(pc.match_substring_regex(s, _NUMBER_RE))
    parsed = pc.if_else(pa.array(ok), s, pa.scalar(None, pa.string())).cast(pa.float64())
    values = np.asarray(pc.fill_null(parsed, np.nan).to_numpy(zero_copy_only=False))
    bad = ~missing & ~(ok & np.isfinite(values))
    return Numbers(np.where(bad, np.nan, values), missing, bad)


@dataclass
class Timestamps:
    us: np.ndarray  # int64 microseconds since the epoch (UTC); 0 where missing or bad
    missing: np.ndarray
    bad: np.ndarray
    naive: np.ndarray  # bool: a valid value without a zone (ISO text or a timestamp column), taken as UTC


def detect_unit(arr: pa.Array | pa.ChunkedArray) -> tuple[str, str] | None:
    """(unit, an example value) from the values; None when the column has no values yet.

    A timestamp/date column is `native`; numbers (or strings that are mostly numbers) are
    epoch seconds below 1e11 and milliseconds from there; other strings are ISO-8601."""
    arr = combined(arr)
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return ("native", str(arr.drop_null()[0].as_py())) if arr.null_count < len(arr) else None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        nums = numbers(arr)
        values = nums.values[np.isfinite(nums.values)]
    else:
        s = text(arr, "timestamp").drop_null()
        if not len(s):
            return None
        is_num = as_bool(pc.match_substring_regex(s, _NUMBER_RE))
        if is_num.mean() <= 0.5:
            return "iso", s[int(np.argmin(is_num))].as_py()
        nums = numbers(s.filter(pa.array(is_num)))
        values = nums.values[np.isfinite(nums.values)]
    if not len(values):
        return None
    magnitude = float(np.median(np.abs(values)))
    example = f"{values[0]:.15g}"
    if magnitude >= US_FROM:
        raise ColumnError(
            f"timestamps look like epoch microseconds or nanoseconds (e.g. {example}): only epoch seconds, "
            "epoch milliseconds and ISO-8601 are supported"
        )
    return ("ms" if magnitude >= MS_FROM else "s"), example


def _in_range(us: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return ok & (us >= MIN_US) & (us < MAX_US)


def timestamps(arr: pa.Array | pa.ChunkedArray, unit: str) -> Timestamps:
    """Values in `unit` (s, ms, iso, native) -> UTC microseconds; out-of-range values are bad."""
    arr = combined(arr)
    n = len(arr)
    if unit == "native":
        t = arr.type
        if pa.types.is_date(t):
            arr = arr.cast(pa.timestamp("us"))
            t = arr.type
        if pa.types.is_timestamp(t):
            missing = is_null(arr)
            as_us = arr.cast(pa.timestamp("us", tz=t.tz), safe=False).cast(pa.int64())
            us = np.asarray(pc.fill_null(as_us, 0).to_numpy(), dtype=np.int64)
            ok = _in_range(us, ~missing)
            naive = ok if t.tz is None else np.zeros(n, dtype=bool)
            return Timestamps(np.where(ok, us, 0), missing, ~missing & ~ok, naive)
        return timestamps(arr, "iso")  # a text column in a file whose first chunk was typed
    if unit in UNIT_FACTOR:
        nums = numbers(arr)
        ok = ~nums.missing & ~nums.bad
        us_f = np.where(ok, np.round(np.nan_to_num(nums.values) * UNIT_FACTOR[unit]), 0.0)
        ok &= (us_f >= MIN_US) & (us_f < MAX_US)
        us = np.where(ok, us_f, 0).astype(np.int64)
        return Timestamps(us, nums.missing, ~nums.missing & ~ok, np.zeros(n, dtype=bool))
    if unit != "iso":
        raise ValueError(f"unknown timestamp unit {unit!r}")
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return timestamps(arr, "native")
    s = text(arr, "timestamp")
    missing = is_null(s)
    zoned = as_bool(pc.match_substring_regex(s, _ZONE_RE))
    us = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    naive = np.zeros(n, dtype=bool)
    for mask, target in ((zoned, pa.timestamp("us", tz="UTC")), (~missing & ~zoned, pa.timestamp("us"))):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        values = s.take(pa.array(idx))
        try:
            us[idx] = np.asarray(values.cast(target).cast(pa.int64()).to_numpy(), dtype=np.int64)
            ok[idx] = True
            naive[idx] = target.tz is None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            us[idx], ok[idx], naive[idx] = _iso_one_by_one(values)
    ok = _in_range(us, ok)
    return Timestamps(np.where(ok, us, 0), missing, ~missing & ~ok, ok & naive)


def _iso_one_by_one(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Python's ISO-8601 parser per distinct value, for a chunk the vectorised cast refused:
    (microseconds, parsed, had no zone)."""
    enc = values.dictionary_encode()
    parsed: list[tuple[int, bool, bool]] = []
    for v in enc.dictionary.to_pylist():
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            parsed.append((0, False, False))
            continue
        naive = ts.tzinfo is None or ts.utcoffset() is None
        delta = (ts.replace(tzinfo=UTC) if naive else ts) - datetime(1970, 1, 1, tzinfo=UTC)
        parsed.append(((delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds, True, naive))
    codes = enc.indices.to_numpy(zero_copy_only=False)
    us, good, naive = (np.asarray(col)[codes] for col in zip(*parsed, strict=True))
    return us.astype(np.int64), good.astype(bool), naive.astype(bool)


# --- JSON lines ------------------------------------------------------------------------


def json_strings(arr: pa.Array) -> pa.Array:
    """Each value as a JSON string literal (`"..."`), null as `null`; escapes only where needed."""
    arr = combined(arr)
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    needs = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_ESCAPE_RE), False)
    if pc.any(needs).as_py():
        fixed = [json.dumps(v, ensure_ascii=False) for v in arr.filter(needs).to_pylist()]
        quoted = pc.replace_with_mask(quoted, needs, pa.array(fixed, pa.string()))
    return pc.fill_null(quoted, "null")


def json_numbers(arr: pa.Array) -> pa.Array:
    """float64 -> JSON number text (`12.5`, `1e+20`), null -> `null` (values are finite)."""
    return pc.fill_null(combined(arr).cast(pa.string()), "null")


def iso_utc(us: np.ndarray) -> pa.Array:
    """UTC microseconds -> `2026-10-05T08:00:00Z` (a fraction only when some value has one).

    Through a zone-less timestamp: its cast to text is ~25x faster than strftime."""
    ts = pa.array(us, pa.int64()).cast(pa.timestamp("us"))
    if not (us % US_PER_S).any():
        ts = ts.cast(pa.timestamp("s"))
    text = pc.replace_substring(ts.cast(pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def json_objects(fields: list[tuple[str, pa.Array]]) -> pa.Array:
    """One JSON object per row from already-encoded JSON value texts (see json_strings)."""
    parts: list[pa.Array | str] = []
    for i, (name, values) in enumerate(fields):
        parts.append(("{" if i == 0 else ",") + json.dumps(name) + ":")
        parts.append(values)
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def lines_bytes(objects: pa.Array) -> bytes:
    """The rows as newline-terminated lines, UTF-8."""
    if not len(objects):
        return b""
    return ("\n".join(objects.to_pylist()) + "\n").encode()
