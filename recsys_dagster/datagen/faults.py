"""Fault injection into landed event lines, one kind per faulty line.

Kinds are named after the quarantine reasons of docs/CONTRACTS.md, so a test can compare
the generator's counts with what ingestion quarantined. Each faulty line is built to fail
exactly one check, assuming ingestion checks in this order: JSON, object, required fields
present, non-null, JSON types, enums, timestamp parse, partition day, duplicates, items.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from recsys_dagster.contract import EVENT_QUARANTINE_REASONS
from recsys_dagster.datagen.clock import MS_PER_DAY, MS_PER_H, iso_ms

FAULT_KINDS = EVENT_QUARANTINE_REASONS

# Required, non-nullable fields (session_id is required but may be null).
_STRICT_FIELDS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "device_type")
_BAD_EVENT_TYPES = ("like", "share", "add_to_cart", "impression")
_BAD_DEVICE_TYPES = ("smartwatch", "tv", "console", "fridge")  # "unknown" is valid: a missing device
_BAD_TIMESTAMPS = ("not-a-timestamp", "2026-13-45T25:61:00Z", "yesterday", "31/10/2026 14:00")


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one instance: json.dumps builds one per call


def _dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


def _digits(s: str) -> int:
    return int("".join(ch for ch in s if ch.isdigit()) or 0)


def _corrupt(rng: np.random.Generator, kind: str, rec: dict[str, Any], day_start: int, unknown_item: str) -> str:
    rec = dict(rec)
    pick = int(rng.integers(1 << 30))
    if kind == "malformed_json":
        line = _dumps(rec)
        return line[: len(line) // 2 + pick % (len(line) // 4)]  # cut before the closing brace
    if kind == "not_an_object":
        return _dumps(list(rec.values()))
    if kind == "missing_field":
        del rec[_STRICT_FIELDS[pick % len(_STRICT_FIELDS)]]
    elif kind == "null_field":
        rec[_STRICT_FIELDS[pick % len(_STRICT_FIELDS)]] = None
    elif kind == "wrong_type":
        field = ("user_id", "item_id", "event_type", "device_type", "session_id")[pick % 5]
        if field == "event_type":
            rec[field] = pick % 5
        elif field == "device_type":
            rec[field] = pick % 3
        else:
            rec[field] = _digits(str(rec[field] or "s1"))
    elif kind == "invalid_event_type":
        rec["event_type"] = _BAD_EVENT_TYPES[pick % len(_BAD_EVENT_TYPES)]
    elif kind == "invalid_device_type":
        rec["device_type"] = _BAD_DEVICE_TYPES[pick % len(_BAD_DEVICE_TYPES)]
    elif kind == "invalid_timestamp":
        rec["timestamp"] = _BAD_TIMESTAMPS[pick % len(_BAD_TIMESTAMPS)]
    elif kind == "timestamp_outside_partition":
        # A skewed device clock: 1 h to 3 days before or after the day.
        skew = int(rng.integers(MS_PER_H, 3 * MS_PER_DAY))
        ts = day_start - skew if pick % 2 else day_start + MS_PER_DAY + skew
        rec["timestamp"] = iso_ms(np.array([ts]))[0]
    elif kind == "unknown_item":
        rec["item_id"] = unknown_item
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    return _dumps(rec)


def inject_faults(
    rng: np.random.Generator,
    records: list[dict[str, Any]],
    fault_rate: float,
    day_start: int,
    unknown_item_ids: list[str],
) -> tuple[list[str], dict[str, int]]:
    """Serialise `records` (clean, in arrival order) with about `fault_rate` of lines faulty.

    Kinds come round-robin so each appears as soon as there are enough lines. Duplicates are
    exact repeats of a clean line, added after it; every other kind replaces a clean line.
    Returns the lines and the count per kind (every kind present, zeros included).
    """
    n = len(records)
    n_faults = int(round(fault_rate * n))
    counts = {k: 0 for k in FAULT_KINDS}
    lines = [_dumps(r) for r in records]
    if n_faults == 0:
        return lines, counts
    kinds = rng.permutation(np.resize(rng.permutation(len(FAULT_KINDS)), n_faults))
    targets = rng.choice(n, size=n_faults, replace=False)
    keys = np.arange(n, dtype=np.float64)
    extra_lines: list[str] = []
    extra_keys: list[float] = []
    for j, (kind_i, row) in enumerate(zip(kinds.tolist(), targets.tolist())):
        kind = FAULT_KINDS[kind_i]
        counts[kind] += 1
        if kind == "duplicate_event_id":
            extra_lines.append(lines[row])
            extra_keys.append(row + (n - row) * float(rng.uniform(1e-6, 1.0)))
        else:
            lines[row] = _corrupt(rng, kind, records[row], day_start, unknown_item_ids[j % len(unknown_item_ids)])
    if extra_lines:
        all_keys = np.concatenate([keys, np.array(extra_keys)])
        all_lines = lines + extra_lines
        lines = [all_lines[i] for i in np.argsort(all_keys, kind="stable").tolist()]
    return lines, counts
