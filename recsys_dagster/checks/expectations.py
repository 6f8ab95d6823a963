"""Great Expectations 1.x expectation suites for the validated datasets (events, catalog, sessions).

GX is imported inside functions: importing it costs seconds, and modules that only need
the names (definitions, tests of other stages) should not pay for it.

Some contract rules are relations that GX cannot express on the raw columns (an event's
UTC date equals its partition; a session's `n_events` equals its number of events). For
those, `prepare_frame` adds derived columns prefixed with `_` that the suites check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recsys_dagster.contract import EVENT_TYPES, LANDING_CONDITIONS, LANDING_DEVICE_TYPES


def _not_null(gx: Any, *columns: str) -> list[Any]:
    return [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def events_suite() -> Any:
    import great_expectations as gx

    ex = gx.expectations
    suite = gx.ExpectationSuite(name="events")
    for e in [
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        *_not_null(gx, "event_id", "user_id", "item_id", "event_type", "timestamp", "device_type", "dt"),
        ex.ExpectColumnValuesToBeUnique(column="event_id"),
        ex.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        ex.ExpectColumnValuesToBeInSet(column="device_type", value_set=list(LANDING_DEVICE_TYPES)),
        ex.ExpectColumnPairValuesToBeEqual(column_A="_timestamp_date", column_B="dt"),
    ]:
        suite.add_expectation(e)
    return suite


def catalog_suite() -> Any:
    import great_expectations as gx

    ex = gx.expectations
    suite = gx.ExpectationSuite(name="catalog")
    for e in [
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        # price may be null (unknown, e.g. an imported catalog without prices); a known one is >= 0.
        *_not_null(gx, "item_id", "title", "category_path", "category_l1", "condition", "created_at", "dt"),
        ex.ExpectColumnValuesToBeUnique(column="item_id"),
        ex.ExpectColumnValuesToBeInSet(column="condition", value_set=list(LANDING_CONDITIONS)),
        ex.ExpectColumnValuesToBeBetween(column="price", min_value=0),
    ]:
        suite.add_expectation(e)
    return suite


def sessions_suite() -> Any:
    import great_expectations as gx

    ex = gx.expectations
    suite = gx.ExpectationSuite(name="sessions")
    for e in [
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        *_not_null(gx, "session_id", "user_id", "start_ts", "end_ts", "n_events", "n_items", "dt"),
        ex.ExpectColumnValuesToBeUnique(column="session_id"),
        ex.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
        ex.ExpectColumnValuesToBeBetween(column="duration_s", min_value=0),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_ts", column_B="start_ts", or_equal=True),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="n_events", column_B="n_items", or_equal=True),
        ex.ExpectColumnValuesToBeInSet(column="device_type", value_set=list(LANDING_DEVICE_TYPES)),
        ex.ExpectColumnPairValuesToBeEqual(column_A="_event_ids_len", column_B="n_events"),
    ]:
        suite.add_expectation(e)
    return suite


SUITES: dict[str, Callable[[], Any]] = {
    "events": events_suite,
    "catalog": catalog_suite,
    "sessions": sessions_suite,
}


def _list_len(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else len(value)


def _is_list_column(col: pd.Series) -> bool:
    if col.dtype != object:
        return False
    first = col.dropna().head(1)
    return not first.empty and isinstance(first.iloc[0], (list, tuple, np.ndarray))


def prepare_frame(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` that GX can validate: derived `_` columns added, list columns dropped.

    A source column that is missing leaves its derived column out, so the expectation on
    it fails with "column not found" rather than this function raising.
    """
    out = df.copy()
    if name == "events" and "timestamp" in out.columns:
        ts = pd.to_datetime(out["timestamp"], utc=True)
        out["_timestamp_date"] = ts.dt.strftime("%Y-%m-%d")
    if name == "sessions" and "event_ids" in out.columns:
        out["_event_ids_len"] = out["event_ids"].map(_list_len).astype("Int64")
    # GX's pandas metrics choke on list/ndarray cells.
    return out.drop(columns=[c for c in out.columns if _is_list_column(out[c])])
