"""Great Expectations suites: good frames pass; broken ones fail on the right expectation.

The GX context is cached per process, so only the first test pays for building it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys_dagster.checks.suites import QualityResult, run_suite, save_result
from recsys_dagster.ingest import validate_catalog, validate_events
from recsys_dagster.lake import Lake

DT = "2026-10-05"


def events_df() -> pd.DataFrame:
    ts = pd.to_datetime(["2026-10-05T08:00:00Z", "2026-10-05T08:01:00Z", "2026-10-05T23:59:59Z"], utc=True)
    return pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["u1", "u1", "u2"],
            "session_id": ["s1", None, None],
            "item_id": ["i1", "i2", "i1"],
            "event_type": ["view", "click", "purchase"],
            "timestamp": ts,
            "device_type": ["mobile", "mobile", "desktop"],
            "extra": ["{}", "{}", '{"a":1}'],
            "dt": [DT] * 3,
        }
    )


def catalog_df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["iPhone 15", "Sofa"],
            "description": [None, "grey"],
            "category_path": ["Electronics > Phones > Apple", "Home"],
            "price": [750.0, 0.0],
            "currency": ["EUR", "EUR"],
            "brand": ["Apple", None],
            "location": ["Berlin", "Rome"],
            "condition": ["like_new", "used"],
            "image_url": [None, None],
            "created_at": pd.to_datetime(["2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z"], utc=True),
            "category_l1": ["Electronics", "Home"],
            "category_l2": ["Phones", ""],
            "category_l3": ["Apple", ""],
            "extra": ["{}", "{}"],
            "dt": [DT, DT],
        }
    )


def sessions_df() -> pd.DataFrame:
    start = pd.to_datetime(["2026-10-05T08:00:00Z", "2026-10-05T09:00:00Z"], utc=True)
    end = pd.to_datetime(["2026-10-05T08:01:00Z", "2026-10-05T09:00:00Z"], utc=True)
    return pd.DataFrame(
        {
            "session_id": ["a" * 16, "b" * 16],
            "user_id": ["u1", "u2"],
            "start_ts": start,
            "end_ts": end,
            "duration_s": [60.0, 0.0],
            # as pandas reads list<...> from Parquet: ndarray cells
            "item_ids": [np.array(["i1", "i2"]), np.array(["i1"])],
            "event_types": [np.array(["view", "click"]), np.array(["purchase"])],
            "event_ids": [np.array(["e1", "e2"]), np.array(["e3"])],
            "timestamps": [np.array([start[0], end[0]]), np.array([start[1]])],
            "event_weights": [np.array([1.0, 2.0]), np.array([16.0])],
            "device_type": ["mobile", "desktop"],
            "n_events": np.array([2, 1], dtype="int64"),
            "n_items": np.array([2, 1], dtype="int64"),
            "dt": [DT, DT],
        }
    )


def failed_by(result: QualityResult) -> dict[tuple[str, str | None], dict]:
    return {(f["expectation"], f["column"]): f for f in result.failed}


@pytest.mark.parametrize("name,make", [("events", events_df), ("catalog", catalog_df), ("sessions", sessions_df)])
def test_good_frames_pass(name, make):
    result = run_suite(name, make())
    assert result.success, result.markdown()
    assert result.failed == [] and result.evaluated >= 8
    assert result.markdown() == f"all {result.evaluated} expectations passed"
    assert result.statistics["rows"] == len(make())


def test_validated_ingest_output_passes_its_suite():
    """The ingest module's Arrow output, read back as pandas, satisfies the suites."""
    items = [
        {
            "item_id": i,
            "title": "t",
            "description": None,
            "category_path": path,
            "price": 1,
            "currency": "EUR",
            "brand": None,
            "location": "Oslo",
            "condition": "new",
            "image_url": None,
            "created_at": "2026-10-01T00:00:00Z",
        }
        for i, path in (("i1", "Books"), ("i2", "Home > Kitchen"))
    ]
    events = [
        {
            "event_id": e,
            "user_id": "u",
            "session_id": None,
            "item_id": i,
            "event_type": "view",
            "timestamp": "2026-10-05T10:00:00+02:00",
            "device_type": "tablet",
        }
        for e, i in (("e1", "i1"), ("e2", "i2"))
    ]
    cat = validate_catalog([json.dumps(x) for x in items], DT)
    assert cat.counts["valid"] == 2 and run_suite("catalog", cat.valid.to_pandas()).success
    ev = validate_events([json.dumps(x) for x in events], DT, {"i1", "i2"})
    assert ev.counts["valid"] == 2 and run_suite("events", ev.valid.to_pandas()).success


def test_events_duplicates_nulls_bad_enums_fail():
    df = events_df()
    df.loc[1, "event_id"] = "e1"
    df.loc[2, "user_id"] = None
    df.loc[0, "event_type"] = "like"
    df.loc[2, "dt"] = "2026-10-04"  # timestamp's UTC date disagrees with the partition
    result = run_suite("events", df)
    assert not result.success
    failed = failed_by(result)
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "event_id"),
        ("expect_column_values_to_not_be_null", "user_id"),
        ("expect_column_values_to_be_in_set", "event_type"),
        ("expect_column_pair_values_to_be_equal", "_timestamp_date,dt"),
    }
    assert failed[("expect_column_values_to_be_unique", "event_id")]["unexpected_count"] == 2
    assert failed[("expect_column_values_to_not_be_null", "user_id")]["unexpected_count"] == 1
    in_set = failed[("expect_column_values_to_be_in_set", "event_type")]
    assert in_set["unexpected_count"] == 1 and in_set["partial_unexpected_list"] == ["like"]
    assert in_set["unexpected_percent"] == pytest.approx(100 / 3)
    md = result.markdown()
    assert md.startswith("4 of ") and "| expect_column_values_to_be_in_set | event_type | 1 |" in md


def test_catalog_bad_price_condition_and_duplicate_ids_fail():
    df = catalog_df()
    df.loc[1, "item_id"] = "i1"
    df.loc[0, "price"] = -1.0
    df.loc[1, "condition"] = "broken"
    failed = failed_by(run_suite("catalog", df))
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "item_id"),
        ("expect_column_values_to_be_between", "price"),
        ("expect_column_values_to_be_in_set", "condition"),
    }
    assert failed[("expect_column_values_to_be_between", "price")]["partial_unexpected_list"] == [-1.0]


def test_sessions_inconsistent_rows_fail():
    df = sessions_df()
    df.loc[0, "end_ts"] = pd.Timestamp("2026-10-05T07:00:00Z")  # before start
    df.loc[0, "duration_s"] = -3600.0
    df.loc[1, "n_items"] = 5  # more distinct items than events
    df.loc[1, "n_events"] = 0  # also disagrees with its one event id
    df.loc[1, "user_id"] = None
    failed = failed_by(run_suite("sessions", df))
    assert set(failed) == {
        ("expect_column_pair_values_a_to_be_greater_than_b", "end_ts,start_ts"),
        ("expect_column_values_to_be_between", "duration_s"),
        ("expect_column_pair_values_a_to_be_greater_than_b", "n_events,n_items"),
        ("expect_column_values_to_be_between", "n_events"),
        ("expect_column_pair_values_to_be_equal", "_event_ids_len,n_events"),
        ("expect_column_values_to_not_be_null", "user_id"),
    }
    assert all(f["unexpected_count"] == 1 for f in failed.values())
    json.dumps(list(failed.values()))  # timestamps in partial_unexpected_list are JSON-safe


def test_empty_frame_fails_row_count():
    result = run_suite("events", events_df().iloc[0:0])
    failed = failed_by(result)
    assert list(failed) == [("expect_table_row_count_to_be_between", None)]
    assert failed[("expect_table_row_count_to_be_between", None)]["observed_value"] == 0


def test_missing_column_reported_plainly():
    failed = failed_by(run_suite("catalog", catalog_df().drop(columns=["condition"])))
    assert failed[("expect_column_values_to_be_in_set", "condition")]["exception"] == (
        "column(s) not in the data: condition"
    )
    assert ("expect_column_values_to_be_unique", "item_id") not in failed


def test_unknown_suite_is_an_error():
    with pytest.raises(ValueError, match="unknown quality suite 'orders'"):
        run_suite("orders", events_df())


def test_save_result_round_trips(any_lake: Lake):
    df = events_df()
    df.loc[0, "device_type"] = "fridge"
    result = run_suite("events", df)
    key = save_result(any_lake, "events", DT, result)
    assert key == f"quality/events/{DT}.json"
    stored = any_lake.read_json(key)
    assert stored == json.loads(json.dumps(result.to_dict()))
    assert stored["success"] is False and stored["failed"][0]["column"] == "device_type"
