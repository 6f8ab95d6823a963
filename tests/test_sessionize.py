"""Spark sessionization (CONTRACTS.md "sessions") and the lake <-> Spark staging."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from recsys_dagster.contract import EVENT_WEIGHTS
from recsys_dagster.lake import Lake
from recsys_dagster.spark.io import read_lake_parquet, write_lake_parquet
from recsys_dagster.spark.sessionize import SESSION_COLUMNS, session_id_for, sessionize, sessionize_partition

UTC = UTC
GAP = timedelta(minutes=30)
EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "timestamp",
    "device_type",
    "extra",
    "dt",
)
SPARK_SCHEMA = (
    "event_id string, user_id string, session_id string, item_id string, event_type string, "
    "timestamp timestamp, device_type string, extra string, dt string"
)


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def ev(
    event_id: str, user: str, ts: str | datetime, item: str = "i1", etype: str = "view", device: str = "mobile"
) -> tuple:
    t = at(ts) if isinstance(ts, str) else ts
    return (event_id, user, None, item, etype, t, device, "{}", t.date().isoformat())


def frame(spark, rows: list[tuple]):
    return spark.createDataFrame(rows, SPARK_SCHEMA)


def utc(x: datetime) -> datetime:
    # Spark hands back naive datetimes in the Python process's local zone.
    return x.astimezone(UTC) if x.tzinfo is None else x


def collect(df) -> list[dict]:
    out = []
    for row in df.collect():
        d = row.asDict()
        for k in ("start_ts", "end_ts"):
            d[k] = utc(d[k])
        d["timestamps"] = [utc(t) for t in d["timestamps"]]
        out.append(d)
    return sorted(out, key=lambda d: (d["user_id"], d["start_ts"]))


def arrow_events(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    schema = pa.schema([(c, pa.timestamp("us", tz="UTC") if c == "timestamp" else pa.string()) for c in EVENT_COLUMNS])
    return pa.table([pa.array(list(v), type=schema.field(c).type) for c, v in zip(EVENT_COLUMNS, cols)], schema=schema)


# ---- the rules, one small hand-made frame each ---------------------------------------


def test_out_of_order_rows_sorted_by_timestamp_then_event_id(spark):
    rows = [
        ev("e3", "u1", "2026-10-06T10:05:00", item="c", etype="purchase", device="tablet"),
        ev("e9", "u1", "2026-10-06T10:00:00", item="a", etype="view", device="desktop"),
        ev("e1", "u1", "2026-10-06T10:02:00", item="b", etype="click"),
        ev("e0", "u1", "2026-10-06T10:05:00", item="c", etype="view"),  # ties e3: event id decides
    ]
    [s] = collect(sessionize(frame(spark, rows), "2026-10-06"))
    assert s["event_ids"] == ["e9", "e1", "e0", "e3"]
    assert s["item_ids"] == ["a", "b", "c", "c"]
    assert s["event_types"] == ["view", "click", "view", "purchase"]
    assert s["event_weights"] == [EVENT_WEIGHTS[t] for t in s["event_types"]]
    assert s["timestamps"] == sorted(s["timestamps"])
    assert s["device_type"] == "desktop"  # of the first event, not the first row
    assert (s["start_ts"], s["end_ts"]) == (at("2026-10-06T10:00:00"), at("2026-10-06T10:05:00"))
    assert s["duration_s"] == 300.0
    assert (s["n_events"], s["n_items"]) == (4, 3)
    assert s["session_id"] == session_id_for("u1", at("2026-10-06T10:00:00"), "e9")
    assert s["dt"] == "2026-10-06"


def test_duplicate_event_ids_collapse_to_the_earliest_copy(spark):
    rows = [
        ev("e1", "u1", "2026-10-06T09:00:00"),
        ev("e2", "u1", "2026-10-06T09:10:00", item="i2"),
        ev("e2", "u1", "2026-10-06T09:10:00", item="i2"),  # overlapping inputs
        ev("e1", "u1", "2026-10-06T09:01:00"),  # a later copy of e1 loses
    ]
    [s] = collect(sessionize(frame(spark, rows), "2026-10-06"))
    assert s["event_ids"] == ["e1", "e2"]
    assert s["timestamps"][0] == at("2026-10-06T09:00:00")
    assert (s["n_events"], s["n_items"]) == (2, 2)


def test_single_event_session(spark):
    rows = [ev("e1", "u1", "2026-10-06T12:00:00", etype="contact_seller"), ev("e2", "u2", "2026-10-06T12:00:00")]
    out = collect(sessionize(frame(spark, rows), "2026-10-06"))
    assert [s["user_id"] for s in out] == ["u1", "u2"]  # same instant, other user: separate
    s = out[0]
    assert s["event_ids"] == ["e1"] and s["start_ts"] == s["end_ts"]
    assert (s["duration_s"], s["n_events"], s["n_items"]) == (0.0, 1, 1)
    assert s["event_weights"] == [EVENT_WEIGHTS["contact_seller"]]


def test_exactly_at_gap_stays_one_microsecond_over_splits(spark):
    rows = [
        ev("a", "u1", "2026-10-06T10:00:00"),
        ev("b", "u1", "2026-10-06T10:30:00"),  # exactly 30 min: same session
        ev("c", "u1", "2026-10-06T11:00:00.000001"),  # 30 min + 1 us: new session
    ]
    out = collect(sessionize(frame(spark, rows), "2026-10-06"))
    assert [s["event_ids"] for s in out] == [["a", "b"], ["c"]]
    # A custom gap moves the boundary.
    wide = collect(sessionize(frame(spark, rows), "2026-10-06", gap_minutes=31))
    assert [s["event_ids"] for s in wide] == [["a", "b", "c"]]


def test_midnight_crossing_session_is_whole_in_the_day_it_closes(spark):
    rows = [
        ev("a", "u1", "2026-10-05T23:45:00"),
        ev("b", "u1", "2026-10-06T00:05:00", item="i2"),
        ev("z", "u2", "2026-10-05T23:29:59.999999"),  # closes 23:59:59.999999: day before
        ev("m", "u3", "2026-10-05T23:30:00"),  # end + gap == midnight exactly: closes on the 6th
    ]
    day = collect(sessionize(frame(spark, rows), "2026-10-06"))
    assert [(s["user_id"], s["event_ids"]) for s in day] == [("u1", ["a", "b"]), ("u3", ["m"])]
    assert day[0]["start_ts"] == at("2026-10-05T23:45:00") and day[0]["dt"] == "2026-10-06"
    # Day 5 sees only its own events (and the 4th's): the first half of u1's session is not its.
    prev = collect(sessionize(frame(spark, [r for r in rows if r[-1] == "2026-10-05"]), "2026-10-05"))
    assert [(s["user_id"], s["event_ids"]) for s in prev] == [("u2", ["z"])]


# ---- partitions: every event in exactly one session ---------------------------------


def _reference_sessions(rows: list[tuple]) -> dict[str, list[tuple[str, ...]]]:
    """Plain-Python sessionization of the whole history: close day -> event-id tuples."""
    by_user: dict[str, list[tuple[datetime, str]]] = {}
    for r in rows:
        by_user.setdefault(r[1], []).append((r[5], r[0]))
    out: dict[str, list[tuple[str, ...]]] = {}
    for evs in by_user.values():
        evs.sort()
        current = [evs[0]]
        for e in evs[1:]:
            if e[0] - current[-1][0] > GAP:
                out.setdefault((current[-1][0] + GAP).date().isoformat(), []).append(tuple(x[1] for x in current))
                current = []
            current.append(e)
        out.setdefault((current[-1][0] + GAP).date().isoformat(), []).append(tuple(x[1] for x in current))
    return out


def test_three_days_every_event_in_exactly_one_partition(spark):
    rng = random.Random(11)
    days = ["2026-10-05", "2026-10-06", "2026-10-07"]
    t0, t_end = at("2026-10-05T00:00:00"), at("2026-10-08T00:00:00")
    steps = [timedelta(minutes=m) for m in (1, 5, 29, 30, 31, 45, 180)] + [timedelta(minutes=30, microseconds=1)]
    rows, n = [], 0
    for u in range(6):
        t = t0 + timedelta(minutes=rng.randint(0, 600))
        while True:
            t += rng.choice(steps)
            if t >= t_end:
                break
            rows.append(
                ev(f"e{n:04d}", f"u{u}", t, item=f"i{rng.randint(0, 9)}", etype=rng.choice(list(EVENT_WEIGHTS)))
            )
            n += 1
    # Sessions across both midnights, so the boundary rule is exercised with certainty.
    for i, ts in enumerate(
        ["2026-10-05T23:50:00", "2026-10-06T00:15:00", "2026-10-06T23:59:59", "2026-10-07T00:20:00"]
    ):
        rows.append(ev(f"m{i}", "night", ts))
    rng.shuffle(rows)

    ran = {}
    for d in days + ["2026-10-08"]:  # the 8th closes the last sessions of the 7th
        prev = (date.fromisoformat(d) - timedelta(days=1)).isoformat()
        part = [r for r in rows if r[-1] in (prev, d)]
        ran[d] = collect(sessionize(frame(spark, part), d)) if part else []

    seen: dict[str, str] = {}
    for d, sessions in ran.items():
        for s in sessions:
            assert s["dt"] == d
            assert d <= (s["end_ts"] + GAP).date().isoformat() < (date.fromisoformat(d) + timedelta(days=1)).isoformat()
            for e in s["event_ids"]:
                assert e not in seen, f"{e} in sessions of {seen[e]} and {d}"
                seen[e] = d
    assert set(seen) == {r[0] for r in rows}
    for r in rows:  # an event of day D sits in a session of D, or D+1 if it closes after midnight
        assert seen[r[0]] in (r[-1], (date.fromisoformat(r[-1]) + timedelta(days=1)).isoformat())
    assert seen["m0"] == seen["m1"] == "2026-10-06" and seen["m2"] == seen["m3"] == "2026-10-07"
    expected = _reference_sessions(rows)
    for d, sessions in ran.items():
        assert sorted(tuple(s["event_ids"]) for s in sessions) == sorted(expected.get(d, []))


# ---- bad input fails loudly -----------------------------------------------------------


def test_missing_column_and_bad_arguments_raise(spark):
    df = frame(spark, [ev("e1", "u1", "2026-10-06T10:00:00")])
    with pytest.raises(ValueError, match="device_type"):
        sessionize(df.drop("device_type"), "2026-10-06")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        sessionize(df, "06/10/2026")
    with pytest.raises(ValueError, match="gap_minutes"):
        sessionize(df, "2026-10-06", gap_minutes=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (ev("x", "u1", "2026-10-07T00:00:00"), "outside"),  # the next day: would close later
        (ev("x", "u1", "2026-10-04T23:59:59"), "outside"),  # beyond the one-day look-back
        (ev("x", "u1", "2026-10-06T10:00:00", etype="wishlist"), "event_type not in weights"),
        (ev("x", None, "2026-10-06T10:00:00"), "null user_id"),
    ],
)
def test_invalid_rows_fail_the_query_with_a_reason(spark, bad, message):
    df = frame(spark, [ev("e1", "u1", "2026-10-06T10:00:00"), bad])
    with pytest.raises(Exception, match=message):
        sessionize(df, "2026-10-06").collect()


# ---- the lake partition ------------------------------------------------------------------


def _expected_arrow_schema() -> pa.Schema:
    ts = pa.timestamp("us", tz="UTC")
    lst = pa.list_(pa.string())
    types = {
        "session_id": pa.string(), "user_id": pa.string(), "start_ts": ts, "end_ts": ts, "duration_s": pa.float64(),
        "item_ids": lst, "event_types": lst, "event_ids": lst, "timestamps": pa.list_(ts),
        "event_weights": pa.list_(pa.float64()), "device_type": pa.string(), "n_events": pa.int64(),
        "n_items": pa.int64(), "dt": pa.string(),
    }  # fmt: skip
    return pa.schema([(c, types[c]) for c in SESSION_COLUMNS])


def _plain(t: pa.DataType) -> str:
    # List element names differ between writers (Spark: "element", pyarrow: "item").
    return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)


def test_sessionize_partition_writes_contract_schema_and_summary(spark, any_lake: Lake, tmp_path: Path):
    d5 = [ev("a1", "u1", "2026-10-05T23:50:00"), ev("a2", "u2", "2026-10-05T08:00:00")]
    d6 = [
        ev("b1", "u1", "2026-10-06T00:10:00", item="i2"),
        ev("b2", "u2", "2026-10-06T09:00:00", etype="purchase"),
        ev("b3", "u2", "2026-10-06T09:20:00", item="i3"),
        ev("b4", "u2", "2026-10-06T09:30:00", item="i3"),
        ev("b5", "u3", "2026-10-06T23:50:00"),  # closes on the 7th: not in the 6th
        ev("b3", "u2", "2026-10-06T09:20:00", item="i3"),  # a re-sent copy: counted, collapsed
    ]
    any_lake.write_partition("events/dt=2026-10-05", arrow_events(d5))
    any_lake.write_partition("events/dt=2026-10-06", arrow_events(d6))

    with pytest.raises(ValueError, match="no events"):
        sessionize_partition(spark, any_lake, "2026-10-07", staging_dir=tmp_path / "s0")

    summary = sessionize_partition(spark, any_lake, "2026-10-06", staging_dir=tmp_path / "s2")
    assert (summary.sessions, summary.events, summary.users) == (2, 5, 2)
    assert (summary.input_events, summary.duplicate_events, summary.files) == (8, 1, 1)
    assert summary.length_histogram["2"] == 1 and summary.length_histogram["3-5"] == 1
    assert sum(summary.length_histogram.values()) == 2
    assert summary.duration_p50_s == pytest.approx(1500.0) and summary.duration_p95_s <= 1800.0
    assert len(summary.preview) == 2 and isinstance(summary.preview[0]["start_ts"], str)

    table = any_lake.read_parquet("sessions/dt=2026-10-06")
    assert [(f.name, _plain(f.type)) for f in table.schema] == [
        (f.name, _plain(f.type)) for f in _expected_arrow_schema()
    ]
    rows = sorted(table.to_pylist(), key=lambda r: r["user_id"])
    assert [r["event_ids"] for r in rows] == [["a1", "b1"], ["b2", "b3", "b4"]]
    assert rows[0]["start_ts"] == at("2026-10-05T23:50:00")
    assert rows[0]["session_id"] == session_id_for("u1", at("2026-10-05T23:50:00"), "a1")

    # Idempotent: a re-run replaces the partition, it does not add to it.
    again = sessionize_partition(spark, any_lake, "2026-10-06", staging_dir=tmp_path / "s3")
    assert again.sessions == 2
    assert len([k for k in any_lake.list_keys("sessions/dt=2026-10-06") if k.endswith(".parquet")]) == 1
    assert any_lake.read_parquet("sessions/dt=2026-10-06").num_rows == 2


def test_preview_shortens_long_lists(spark, local_lake: Lake, tmp_path: Path):
    rows = [ev(f"e{i:02d}", "u1", at("2026-10-06T10:00:00") + timedelta(minutes=i)) for i in range(8)]
    local_lake.write_partition("events/dt=2026-10-06", arrow_events(rows))
    summary = sessionize_partition(spark, local_lake, "2026-10-06", staging_dir=tmp_path / "s")
    [p] = summary.preview
    assert p["event_ids"] == ["e00", "e01", "e02", "e03", "e04", "... (+3)"]
    assert summary.length_histogram["6-10"] == 1
    assert summary.duration_p50_s == summary.duration_p95_s == 420.0


def test_day_without_closing_sessions_writes_an_empty_partition(spark, local_lake: Lake, tmp_path: Path):
    # No day before it (allowed), and its only session closes after midnight: zero rows,
    # but the partition exists with the contract's columns.
    local_lake.write_partition("events/dt=2026-10-06", arrow_events([ev("e1", "u1", "2026-10-06T23:45:00")]))
    summary = sessionize_partition(spark, local_lake, "2026-10-06", staging_dir=tmp_path / "s")
    assert (summary.sessions, summary.events, summary.input_events, summary.preview) == (0, 0, 1, [])
    table = local_lake.read_parquet("sessions/dt=2026-10-06")
    assert table.num_rows == 0 and table.schema.names == list(SESSION_COLUMNS)


def test_read_and_write_lake_parquet(spark, any_lake: Lake, tmp_path: Path):
    assert read_lake_parquet(spark, any_lake, ["events/dt=2026-10-01"], tmp_path / "r0") is None
    any_lake.write_partition("events/dt=2026-10-06", arrow_events([ev("e1", "u1", "2026-10-06T10:00:00")]))
    any_lake.write_json("events/dt=2026-10-06/summary.json", {"not": "parquet"})  # skipped, not read
    df = read_lake_parquet(spark, any_lake, ["events/dt=2026-10-05", "events/dt=2026-10-06"], tmp_path / "r1")
    assert df is not None and df.count() == 1 and set(EVENT_COLUMNS) <= set(df.columns)

    n = write_lake_parquet(df.union(df), any_lake, "copy/dt=2026-10-06", tmp_path / "w", num_files=2)
    keys = any_lake.list_keys("copy/dt=2026-10-06")
    assert n == len(keys) and 1 <= n <= 2 and all(k.endswith(".parquet") for k in keys)
    out = any_lake.read_parquet("copy/dt=2026-10-06")
    assert out.num_rows == 2 and out.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValueError, match="num_files"):
        write_lake_parquet(df, any_lake, "copy/dt=2026-10-06", tmp_path / "w", num_files=0)
