"""Ingestion: line validation (every quarantine reason), and partition ingest on the lake."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from recsys_dagster.ingest import (
    CATALOG_QUARANTINE_SCHEMA,
    CATALOG_REASONS,
    CATALOG_SCHEMA,
    EVENT_REASONS,
    EVENTS_QUARANTINE_SCHEMA,
    EVENTS_SCHEMA,
    IngestError,
    ingest_catalog_partition,
    ingest_events_partition,
    validate_catalog,
    validate_events,
)
from recsys_dagster.lake import Lake

DT = "2026-10-05"
ITEMS = {"i1", "i2"}


def event(**over) -> dict:
    base = {
        "event_id": "e1",
        "user_id": "u1",
        "session_id": "s1",
        "item_id": "i1",
        "event_type": "view",
        "timestamp": "2026-10-05T12:00:00Z",
        "device_type": "mobile",
    }
    base.update(over)
    return base


def item(**over) -> dict:
    base = {
        "item_id": "i1",
        "title": "iPhone 15 Pro 256GB Blue",
        "description": "barely used",
        "category_path": "Electronics > Phones > Apple",
        "price": 750,
        "currency": "EUR",
        "brand": "Apple",
        "location": "Berlin",
        "condition": "like_new",
        "image_url": "https://img.example/i1.jpg",
        "created_at": "2026-10-01T08:30:00+02:00",
    }
    base.update(over)
    return base


def line(obj) -> str:
    return json.dumps(obj)


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def assert_accounted(result, n_lines: int) -> None:
    c = result.counts
    assert c["input"] == n_lines
    assert c["valid"] == result.valid.num_rows
    assert c["quarantined"] == result.quarantine.num_rows
    assert c["valid"] + c["quarantined"] == n_lines
    assert sum(c["by_reason"].values()) == c["quarantined"]


# --- events ---------------------------------------------------------------------------------

EVENT_CASES = [
    ("malformed_json", '{"event_id": "e1", '),
    ("not_an_object", "[1, 2, 3]"),
    ("missing_field", line(without(event(), "user_id"))),
    ("null_field", line(event(item_id=None))),
    ("null_field", line(event(user_id="  "))),
    ("wrong_type", line(event(user_id=42))),
    ("wrong_type", line(event(timestamp=1790000000))),
    ("invalid_event_type", line(event(event_type="like"))),
    ("invalid_device_type", line(event(device_type="fridge"))),
    ("invalid_timestamp", line(event(timestamp="yesterday"))),
    ("invalid_timestamp", line(event(timestamp="2026-10-05T12:00:00"))),  # no zone
    ("timestamp_outside_partition", line(event(timestamp="2026-10-06T00:00:00Z"))),
    ("timestamp_outside_partition", line(event(timestamp="2026-10-05T01:00:00+03:00"))),  # 10-04 22:00 UTC
    ("unknown_item", line(event(item_id="i999"))),
]


@pytest.mark.parametrize("reason,raw", EVENT_CASES)
def test_event_quarantine_reason(reason, raw):
    result = validate_events([raw], DT, ITEMS)
    assert result.valid.num_rows == 0
    q = result.quarantine.to_pylist()
    assert q[0]["reason"] == reason and q[0]["raw"] == raw and q[0]["dt"] == DT
    assert q[0]["detail"]  # a human-readable explanation, not just the code
    assert result.counts["by_reason"] == {reason: 1}


def test_every_event_reason_is_exercised():
    covered = {r for r, _ in EVENT_CASES} | {"duplicate_event_id"}
    assert covered == set(EVENT_REASONS)


def test_event_detail_names_the_problem():
    q = validate_events([line(without(event(), "device_type"))], DT, ITEMS).quarantine.to_pylist()[0]
    assert "device_type" in q["detail"] and q["event_id"] == "e1"


def test_valid_event_typed_and_normalised_to_utc():
    raws = [
        line(event(event_id="a", timestamp="2026-10-05T23:30:00-00:00")),
        line(event(event_id="b", timestamp="2026-10-06T01:15:00.123456+02:00", session_id=None)),
        line(without(event(event_id="c"), "session_id")),  # session_id is nullable, absent = null
    ]
    result = validate_events(raws, DT, ITEMS)
    assert result.valid.schema == EVENTS_SCHEMA
    assert result.quarantine.schema == EVENTS_QUARANTINE_SCHEMA
    rows = result.valid.to_pylist()
    assert [r["event_id"] for r in rows] == ["a", "b", "c"]
    assert rows[1]["timestamp"] == datetime(2026, 10, 5, 23, 15, 0, 123456, tzinfo=UTC)
    assert rows[0]["timestamp"].utcoffset().total_seconds() == 0
    assert rows[1]["session_id"] is None and rows[2]["session_id"] is None
    assert all(r["dt"] == DT and r["extra"] == "{}" for r in rows)


def test_extra_fields_kept_as_json():
    raw = line(event(app_version="3.2.1", ab={"bucket": 7}))
    rows = validate_events([raw], DT, ITEMS).valid.to_pylist()
    assert json.loads(rows[0]["extra"]) == {"app_version": "3.2.1", "ab": {"bucket": 7}}


def test_duplicates_first_kept_later_quarantined():
    raws = [
        line(event(event_id="x", user_id="first")),
        line(event(event_id="y")),
        line(event(event_id="x", user_id="second")),
        line(event(event_id="x", user_id="third")),
    ]
    result = validate_events(raws, DT, ITEMS)
    assert [(r["event_id"], r["user_id"]) for r in result.valid.to_pylist()] == [("x", "first"), ("y", "u1")]
    q = result.quarantine.to_pylist()
    assert [r["reason"] for r in q] == ["duplicate_event_id"] * 2
    assert [json.loads(r["raw"])["user_id"] for r in q] == ["second", "third"]
    assert "line 1" in q[0]["detail"]


def test_rejected_first_copy_does_not_make_later_valid_copy_a_duplicate():
    raws = [line(event(event_id="x", item_id="nope")), line(event(event_id="x"))]
    result = validate_events(raws, DT, ITEMS)
    assert result.valid.column("event_id").to_pylist() == ["x"]
    assert result.quarantine.column("reason").to_pylist() == ["unknown_item"]


def test_mixed_batch_counts_add_up():
    raws = (
        [raw for _, raw in EVENT_CASES]
        + [line(event(event_id=f"ok{i}", item_id="i2")) for i in range(5)]
        + [line(event(event_id="ok0")), "", "null"]
    )
    result = validate_events(raws, DT, ITEMS)
    assert_accounted(result, len(raws))
    assert result.counts["valid"] == 5
    assert result.counts["by_reason"]["duplicate_event_id"] == 1
    assert result.counts["by_reason"]["malformed_json"] == 2  # the truncated line and ""
    assert result.counts["by_reason"]["not_an_object"] == 2  # the list and null


def test_empty_input_gives_typed_empty_tables():
    result = validate_events([], DT, ITEMS)
    assert result.valid.num_rows == 0 and result.valid.schema == EVENTS_SCHEMA
    assert result.counts == {"input": 0, "valid": 0, "quarantined": 0, "by_reason": {}}


def test_bad_partition_key_rejected():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        validate_events([], "2026-13-01", ITEMS)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        validate_catalog([], "20261005")


# --- catalog --------------------------------------------------------------------------------

CATALOG_CASES = [
    ("malformed_json", "not json"),
    ("not_an_object", '"a string"'),
    ("missing_field", line(without(item(), "condition"))),
    ("null_field", line(item(title=None))),
    ("wrong_type", line(item(price="750"))),
    ("wrong_type", line(item(price=True))),
    ("wrong_type", line(item(title=["a"]))),
    ("invalid_price", line(item(price=-1))),
    (
        "invalid_price",
        '{"item_id": "i1", "title": "t", "description": null, "category_path": "A", "price": NaN, '
        '"currency": "EUR", "brand": null, "location": "X", "condition": "new", "image_url": null, '
        '"created_at": "2026-10-01T00:00:00Z"}',
    ),
    ("invalid_condition", line(item(condition="broken"))),
    ("invalid_category_path", line(item(category_path="A > B > C > D"))),
    ("invalid_category_path", line(item(category_path="Electronics >  > Apple"))),
    ("invalid_timestamp", line(item(created_at="01/10/2026"))),
]


@pytest.mark.parametrize("reason,raw", CATALOG_CASES)
def test_catalog_quarantine_reason(reason, raw):
    result = validate_catalog([raw], DT)
    assert result.valid.num_rows == 0
    q = result.quarantine.to_pylist()[0]
    assert q["reason"] == reason and q["raw"] == raw and q["detail"]


def test_every_catalog_reason_is_exercised():
    assert {r for r, _ in CATALOG_CASES} | {"duplicate_item_id"} == set(CATALOG_REASONS)


def test_catalog_valid_rows_typed_and_split():
    raws = [
        line(item()),
        line(item(item_id="i2", category_path="Books", price=3.5, brand=None, extra_tag="x")),
        line(without(without(item(item_id="i3", category_path="Home > Kitchen"), "description"), "image_url")),
        line(item(item_id="i1", title="dup")),
    ]
    result = validate_catalog(raws, DT)
    assert_accounted(result, 4)
    assert result.valid.schema == CATALOG_SCHEMA
    assert result.quarantine.schema == CATALOG_QUARANTINE_SCHEMA
    rows = result.valid.to_pylist()
    assert [r["item_id"] for r in rows] == ["i1", "i2", "i3"]
    levels = [(r["category_l1"], r["category_l2"], r["category_l3"]) for r in rows]
    assert levels[:2] == [("Electronics", "Phones", "Apple"), ("Books", "", "")]
    assert rows[2]["category_l2"] == "Kitchen" and rows[2]["description"] is None
    assert rows[0]["price"] == 750.0 and isinstance(rows[0]["price"], float)
    assert rows[0]["created_at"] == datetime(2026, 10, 1, 6, 30, tzinfo=UTC)
    assert rows[1]["brand"] is None and json.loads(rows[1]["extra"]) == {"extra_tag": "x"}
    q = result.quarantine.to_pylist()
    assert [(r["reason"], r["item_id"]) for r in q] == [("duplicate_item_id", "i1")]


# --- partitions on the lake -----------------------------------------------------------------


def land(lake: Lake, kind: str, dt: str, name: str, rows) -> str:
    key = f"landing/{kind}/dt={dt}/{name}"
    lake.write_jsonl_gz(key, rows)
    return key


def test_ingest_catalog_then_events_idempotent(any_lake: Lake):
    land(any_lake, "catalog", DT, "catalog.jsonl.gz", [item(), item(item_id="i2"), item(item_id="i3", price=-5)])
    cat = ingest_catalog_partition(any_lake, DT)
    assert cat.counts["valid"] == 2 and cat.counts["by_reason"] == {"invalid_price": 1}
    assert [r["item_id"] for r in cat.preview] == ["i1", "i2"]
    flat = cat.to_dict()  # what the asset turns into metadata: flat counts, JSON-safe
    assert (flat["input"], flat["valid"], flat["quarantined"]) == (3, 2, 1)
    assert flat["by_reason"] == {"invalid_price": 1} and flat["preview"] == cat.preview
    json.dumps(flat)

    land(any_lake, "events", DT, "part-00000.jsonl.gz", [event(event_id="a"), event(event_id="b", item_id="i3")])
    part1 = [event(event_id="a"), "garbage", event(event_id="c", item_id="i2")]
    land(any_lake, "events", DT, "part-00001.jsonl.gz", part1)
    for _ in range(2):  # a re-run replaces, never duplicates
        summary = ingest_events_partition(any_lake, DT)
        assert summary.counts == {
            "input": 5,
            "valid": 2,
            "quarantined": 3,
            "by_reason": {"duplicate_event_id": 1, "malformed_json": 1, "unknown_item": 1},
        }
        events = any_lake.read_parquet(f"events/dt={DT}")
        assert sorted(events.column("event_id").to_pylist()) == ["a", "c"]
        assert events.schema == EVENTS_SCHEMA
        quarantine = any_lake.read_parquet(f"quarantine/events/dt={DT}")
        assert quarantine.num_rows == 3
        assert len([k for k in any_lake.list_keys(f"events/dt={DT}") if k.endswith(".parquet")]) == 1
    assert summary.sources == [
        f"landing/events/dt={DT}/part-00000.jsonl.gz",
        f"landing/events/dt={DT}/part-00001.jsonl.gz",
    ]
    assert any_lake.read_parquet(f"catalog/dt={DT}").schema == CATALOG_SCHEMA


def test_empty_quarantine_still_written_so_reruns_clear_it(local_lake: Lake):
    land(local_lake, "catalog", DT, "catalog.jsonl.gz", [item(), "bad"])
    ingest_catalog_partition(local_lake, DT)
    assert local_lake.read_parquet(f"quarantine/catalog/dt={DT}").num_rows == 1
    land(local_lake, "catalog", DT, "catalog.jsonl.gz", [item()])  # producer fixed the file
    ingest_catalog_partition(local_lake, DT)
    assert local_lake.read_parquet(f"quarantine/catalog/dt={DT}").num_rows == 0
    assert local_lake.read_parquet(f"catalog/dt={DT}").num_rows == 1


def test_events_use_previous_day_catalog(local_lake: Lake):
    land(local_lake, "catalog", "2026-10-04", "catalog.jsonl.gz", [item(item_id="old")])
    ingest_catalog_partition(local_lake, "2026-10-04")
    land(local_lake, "events", DT, "part-0.jsonl.gz", [event(item_id="old"), event(event_id="e2", item_id="i1")])
    summary = ingest_events_partition(local_lake, DT)
    assert summary.counts["valid"] == 1 and summary.counts["by_reason"] == {"unknown_item": 1}
    assert summary.preview[0]["item_id"] == "old"
    assert summary.preview[0]["timestamp"].startswith("2026-10-05T12:00:00")


def test_missing_catalog_is_a_clear_error_and_a_day_without_events_is_empty(local_lake: Lake):
    with pytest.raises(IngestError, match=r"no catalog snapshot landed on or before 2026-10-05.*landing/catalog"):
        ingest_catalog_partition(local_lake, DT)
    # No event file: an ordinary, empty day (written and recorded as such), not an error.
    summary = ingest_events_partition(local_lake, DT)
    assert summary.empty and summary.sources == [] and summary.counts["valid"] == 0
    assert local_lake.read_parquet(f"events/dt={DT}").num_rows == 0


def test_catalog_lands_once_and_carries_forward(local_lake: Lake):
    land(local_lake, "catalog", DT, "catalog.jsonl.gz", [item(item_id="a"), item(item_id="b"), {"item_id": "bad"}])
    first = ingest_catalog_partition(local_lake, DT)
    assert first.snapshot_day == DT and first.counts["quarantined"] == 1
    later = ingest_catalog_partition(local_lake, "2026-10-09")
    assert later.snapshot_day == DT and later.counts["quarantined"] == 0  # reported once, on its day
    assert sorted(local_lake.read_parquet("catalog/dt=2026-10-09").column("item_id").to_pylist()) == ["a", "b"]
    assert set(local_lake.read_parquet("catalog/dt=2026-10-09").column("dt").to_pylist()) == {"2026-10-09"}
    land(local_lake, "catalog", "2026-10-08", "catalog.jsonl.gz", [item(item_id="c")])  # a newer snapshot wins
    assert ingest_catalog_partition(local_lake, "2026-10-09").snapshot_day == "2026-10-08"
    assert local_lake.read_parquet("catalog/dt=2026-10-09").column("item_id").to_pylist() == ["c"]
    assert ingest_catalog_partition(local_lake, "2026-10-07").snapshot_day == DT


def test_events_without_any_catalog_is_a_clear_error(local_lake: Lake):
    land(local_lake, "events", DT, "part-0.jsonl.gz", [event()])
    with pytest.raises(IngestError, match="ingest the catalog partition first"):
        ingest_events_partition(local_lake, DT)
    assert not local_lake.has_data(f"events/dt={DT}")


def test_corrupt_landing_file_names_the_key(local_lake: Lake):
    local_lake.put_bytes(f"landing/catalog/dt={DT}/catalog.jsonl.gz", b"not gzip at all")
    with pytest.raises(IngestError, match="catalog.jsonl.gz"):
        ingest_catalog_partition(local_lake, DT)


def test_a_realistic_day_of_events():
    # Speed is measured in benchmarks, not here: this checks the accounting at volume.
    items = {f"i{i}" for i in range(2000)}
    raws = [
        line(event(event_id=f"e{i}", item_id=f"i{i % 2500}", timestamp=f"2026-10-05T{i % 24:02d}:{i % 60:02d}:00Z"))
        for i in range(30_000)
    ]
    result = validate_events(raws, DT, items)
    assert_accounted(result, len(raws))
    assert isinstance(result.valid, pa.Table) and result.counts["by_reason"] == {"unknown_item": 6000}
