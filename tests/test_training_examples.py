"""Training examples (recsys_dagster/spark/training.py) and the leakage checks, on small
hand-made sessions and catalog snapshots."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from recsys_dagster.contract import EVENT_WEIGHTS, day_prefix
from recsys_dagster.spark.examples import ExampleConfig, ExampleCounts, ExamplesSummary
from recsys_dagster.spark.leakage import check_counts, check_negatives_disjoint, check_no_leakage
from recsys_dagster.spark.training import (
    TrainingDataError,
    alias_table,
    build_examples,
    explode_positives,
    negative_quota,
    sample_negatives,
    split_for,
    training_partition,
    user_seen,
)

WEEK = "2026-10-19"
WEEK_END = date(2026, 10, 25)
CFG = ExampleConfig(history_len=3, negatives=4, window_days=7, validation_days=2, test_days=2)
LEAVES = {
    "Electronics > Phones > Apple": "a",
    "Electronics > Phones > Samsung": "s",
    "Home > Kitchen > Pans": "p",
}
LEGO = "Toys > Lego > Rare"  # a leaf with one item: hard negatives must fall back


def ts(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 10, day, hh, mm, tzinfo=UTC)


# --- hand-made data -----------------------------------------------------------------------


def _session(sid: str, user: str, events: list[tuple[str, str, datetime]], device: str = "mobile") -> dict:
    events = sorted(events, key=lambda e: e[2])
    end = events[-1][2]
    return {
        "session_id": sid,
        "user_id": user,
        "start_ts": events[0][2],
        "end_ts": end,
        "duration_s": (end - events[0][2]).total_seconds(),
        "item_ids": [e[0] for e in events],
        "event_types": [e[1] for e in events],
        "event_ids": [f"{sid}-{i}" for i in range(len(events))],
        "timestamps": [e[2] for e in events],
        "event_weights": [EVENT_WEIGHTS[e[1]] for e in events],
        "device_type": device,
        "n_events": len(events),
        "n_items": len({e[0] for e in events}),
        "dt": (end + timedelta(minutes=30)).date().isoformat(),
    }


def make_sessions() -> list[dict]:
    s = [
        # u1: the history walk-through (see test_history_strictly_before_and_deduped)
        _session(
            "s1",
            "u1",
            [
                ("a0", "view", ts(19, 10)),
                ("a1", "view", ts(19, 10, 5)),
                ("a0", "purchase", ts(19, 10, 10)),
                ("a0", "click", ts(19, 10, 20)),
            ],
        ),
        _session(
            "s2",
            "u1",
            [("a2", "view", ts(20, 9)), ("a3", "view", ts(20, 9)), ("a0", "click", ts(20, 9, 30))],
            "desktop",
        ),
        _session("s3", "u1", [("a1", "view", ts(22, 12))]),
        _session("s4", "u1", [("s0", "purchase", ts(24, 8))]),
        # u2: a session across midnight (train -> validation), an item only seen in events,
        # the one-item leaf, and strongest-event ties (two purchases: the first one counts)
        _session("s5", "u2", [("p0", "view", ts(21, 23, 50)), ("p1", "click", ts(22, 0, 10))]),
        _session(
            "s6",
            "u2",
            [
                ("ghost", "view", ts(20, 8)),
                ("t0", "click", ts(20, 8, 5)),
                ("p2", "purchase", ts(20, 8, 10)),
                ("p2", "purchase", ts(20, 8, 20)),
            ],
        ),
        _session("s7", "u2", [("s1", "view", ts(25, 7))]),
    ]
    rng = random.Random(7)
    items = [f"{p}{i}" for p in LEAVES.values() for i in range(8)]
    for u in range(3, 13):
        for day in range(19, 26):
            if rng.random() < 0.3:
                continue
            start = ts(day, rng.randrange(8, 20), rng.randrange(0, 50))
            evs = [
                (rng.choice(items), rng.choice(list(EVENT_WEIGHTS)), start + timedelta(minutes=3 * i))
                for i in range(rng.randrange(2, 6))
            ]
            s.append(_session(f"r{u}-{day}", f"u{u}", evs, rng.choice(["mobile", "desktop", "tablet"])))
    return s


def make_catalog(dt: str, with_old: bool) -> list[dict]:
    rows = []
    leaves = dict(LEAVES, **{LEGO: "t"})
    for path, prefix in leaves.items():
        for i in range(1 if prefix == "t" else 8):
            rows.append(_item(f"{prefix}{i}", path, dt))
    if with_old:
        rows.append(_item("old1", "Electronics > Phones > Apple", dt))
    return rows


def _item(item_id: str, path: str, dt: str) -> dict:
    levels = (path.split(" > ") + ["", "", ""])[:3]
    return {
        "item_id": item_id,
        "title": f"title {item_id} {dt}",
        "description": "d",
        "category_path": path,
        "price": 10.0,
        "currency": "EUR",
        "brand": "b",
        "location": "Berlin",
        "condition": "used",
        "image_url": "http://x",
        "created_at": datetime(2026, 9, 1, tzinfo=UTC),
        "category_l1": levels[0],
        "category_l2": levels[1],
        "category_l3": levels[2],
        "extra": "{}",
        "dt": dt,
    }


TS = pa.timestamp("us", tz="UTC")
SESSION_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("start_ts", TS),
        ("end_ts", TS),
        ("duration_s", pa.float64()),
        ("item_ids", pa.list_(pa.string())),
        ("event_types", pa.list_(pa.string())),
        ("event_ids", pa.list_(pa.string())),
        ("timestamps", pa.list_(TS)),
        ("event_weights", pa.list_(pa.float64())),
        ("device_type", pa.string()),
        ("n_events", pa.int64()),
        ("n_items", pa.int64()),
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
        ("created_at", TS),
        ("category_l1", pa.string()),
        ("category_l2", pa.string()),
        ("category_l3", pa.string()),
        ("extra", pa.string()),
        ("dt", pa.string()),
    ]
)
CATALOG_DAYS = ("2026-10-19", "2026-10-24")


def write_lake(lake, sessions: list[dict], session_days: set[str] | None = None) -> None:
    for dt in sorted({s["dt"] for s in sessions}):
        if session_days is None or dt in session_days:
            lake.write_partition(
                day_prefix("sessions", dt), pa.Table.from_pylist([s for s in sessions if s["dt"] == dt], SESSION_SCHEMA)
            )
    for dt in CATALOG_DAYS:
        lake.write_partition(
            day_prefix("catalog", dt), pa.Table.from_pylist(make_catalog(dt, dt == CATALOG_DAYS[0]), CATALOG_SCHEMA)
        )


def spark_frames(spark, tmp: Path):
    pq.write_table(pa.Table.from_pylist(make_sessions(), SESSION_SCHEMA), tmp / "sessions.parquet")
    catalog = make_catalog(CATALOG_DAYS[0], True) + make_catalog(CATALOG_DAYS[1], False)
    pq.write_table(pa.Table.from_pylist(catalog, CATALOG_SCHEMA), tmp / "catalog.parquet")
    return spark.read.parquet(str(tmp / "sessions.parquet")), spark.read.parquet(str(tmp / "catalog.parquet"))


def collect(out: dict) -> dict[str, list[dict]]:
    """Rows as dicts, timestamps as aware UTC datetimes (whatever the local time zone)."""
    got = {}
    for name, df in out.items():
        stamps = [f.name for f in df.schema.fields if f.dataType.typeName() == "timestamp"]
        df = df.select(*[F.unix_micros(c).alias(c) if c in stamps else c for c in df.columns])
        rows = [r.asDict(recursive=True) for r in df.collect()]
        for r in rows:
            for c in stamps:
                if r[c] is not None:
                    r[c] = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=r[c])
        got[name] = rows
    return got


@pytest.fixture(scope="module", autouse=True)
def _one_shuffle_partition(spark):
    """Tiny data: one shuffle partition saves seconds per stage. Restored for other modules."""
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "1")
    yield
    spark.conf.set("spark.sql.shuffle.partitions", before)


@pytest.fixture(scope="module")
def frames(spark, tmp_path_factory):
    return spark_frames(spark, tmp_path_factory.mktemp("train-in"))


@pytest.fixture(scope="module")
def built(frames):
    sessions, catalog = frames
    out = build_examples(sessions, catalog, WEEK_END, CFG)
    return out, collect(out)


def rows_of(got: dict) -> list[dict]:
    return got["train"] + got["validation"] + got["test"]


def find(got: dict, user: str, session: str, item: str) -> dict:
    [row] = [r for r in rows_of(got) if (r["user_id"], r["session_id"], r["item_id"]) == (user, session, item)]
    return row


# --- calendar and pure helpers ----------------------------------------------------------------


def test_split_for_and_quota():
    assert split_for(date(2026, 10, 21), WEEK_END, CFG) == "train"
    assert split_for(date(2026, 10, 18), WEEK_END, CFG) == "train"  # session started before the window
    assert split_for(date(2026, 10, 22), WEEK_END, CFG) == "validation"
    assert split_for(date(2026, 10, 23), WEEK_END, CFG) == "validation"
    assert split_for(date(2026, 10, 24), WEEK_END, CFG) == "test"
    assert split_for(WEEK_END, WEEK_END, CFG) == "test"
    with pytest.raises(ValueError, match="after the window"):
        split_for(date(2026, 10, 26), WEEK_END, CFG)
    assert negative_quota(ExampleConfig()) == {"popular": 4, "uniform": 2, "hard": 2}
    assert negative_quota(ExampleConfig(negatives=5)) == {"popular": 3, "uniform": 1, "hard": 1}
    assert sum(negative_quota(ExampleConfig(negatives=7, mix_popular=0.2, mix_uniform=0.3, mix_hard=0.5)).values()) == 7
    with pytest.raises(ValueError, match="window_days"):
        ExampleConfig(window_days=4, validation_days=2, test_days=2)
    with pytest.raises(ValueError, match="mix"):
        ExampleConfig(mix_popular=0.5, mix_uniform=0.5, mix_hard=0.5)


def test_alias_table_matches_weights():
    import numpy as np

    w = np.array([1.0, 0.0, 3.0, 6.0])
    prob, alias = alias_table(w)
    mass = prob.copy()
    for i in range(len(w)):
        mass[alias[i]] += 1.0 - prob[i]
    assert np.allclose(mass / len(w), w / w.sum())
    with pytest.raises(ValueError):
        alias_table(np.zeros(3))


# --- examples -----------------------------------------------------------------------------------


def test_positive_is_strongest_event_at_first_time(built):
    _, got = built
    a0 = find(got, "u1", "s1", "a0")
    assert (a0["event_type"], a0["weight"], a0["timestamp"]) == ("purchase", 16.0, ts(19, 10, 10))
    p2 = find(got, "u2", "s6", "p2")
    assert (p2["event_type"], p2["timestamp"], p2["hour"]) == ("purchase", ts(20, 8, 10), 8)
    assert find(got, "u1", "s2", "a2")["device_type"] == "desktop"
    # one row per (session, item)
    keys = [(r["session_id"], r["item_id"]) for r in rows_of(got)]
    assert len(keys) == len(set(keys))


def test_history_strictly_before_and_deduped(built):
    _, got = built
    assert find(got, "u1", "s1", "a1")["history"] == []
    assert find(got, "u1", "s1", "a0")["history"] == ["a1"]
    # a2 and a3 share a timestamp: neither sees the other
    assert find(got, "u1", "s2", "a2")["history"] == ["a1", "a0"]
    assert find(got, "u1", "s2", "a3")["history"] == ["a1", "a0"]
    # sequence a1 a0 (a2 a3) -> a0: last 3 distinct, oldest first
    assert find(got, "u1", "s2", "a0")["history"] == ["a0", "a2", "a3"]
    # a0 again later: it moves to the end, once (dedup keeps the last occurrence)
    assert find(got, "u1", "s3", "a1")["history"] == ["a2", "a3", "a0"]
    assert find(got, "u1", "s4", "s0")["history"] == ["a3", "a0", "a1"]
    hist = {r["user_id"]: r["history"] for r in got["user_histories"]}
    assert hist["u1"] == ["a0", "a1", "s0"]
    assert hist["u2"] == ["p0", "p1", "s1"]
    assert all(len(h) <= CFG.history_len and len(h) == len(set(h)) for h in hist.values())


def test_user_seen_is_distinct_most_recent_first_and_bounded(built, frames):
    _, got = built
    seen = {r["user_id"]: r["seen"] for r in got["user_seen"]}
    # u1 by each item's latest positive: s0 (24th), a1 (22nd), a0 (20th 9:30), a3 = a2 (20th 9:00, by id desc)
    assert seen["u1"] == ["s0", "a1", "a0", "a3", "a2"]
    assert seen["u2"] == ["s1", "p1", "p0", "p2", "t0", "ghost"]
    hist = {r["user_id"]: r["history"] for r in got["user_histories"]}
    assert set(seen) == set(hist)
    for user, items in seen.items():
        assert len(items) == len(set(items)) and set(hist[user]) <= set(items)
        assert items[: len(hist[user])] == hist[user][::-1]  # the history is the seen-set's recent end, reversed
    assert max(len(v) for v in seen.values()) > CFG.history_len  # more than the model's input history
    sessions, _ = frames
    bounded = {r["user_id"]: r["seen"] for r in user_seen(explode_positives(sessions, WEEK_END, CFG), 2).collect()}
    assert bounded["u1"] == ["s0", "a1"] and all(v == seen[u][:2] for u, v in bounded.items())
    with pytest.raises(ValueError, match="seen_limit"):
        ExampleConfig(seen_limit=0)


def test_splits_by_time(built):
    _, got = built
    for split in ("train", "validation", "test"):
        assert got[split], split
        for r in got[split]:
            assert r["split"] == split
            assert split_for(r["timestamp"].date(), WEEK_END, CFG) == split
    # the session across midnight gives one train and one validation positive
    assert find(got, "u2", "s5", "p0")["split"] == "train"
    assert find(got, "u2", "s5", "p1")["split"] == "validation"
    assert max(r["timestamp"] for r in got["train"]) < min(r["timestamp"] for r in got["validation"])
    assert max(r["timestamp"] for r in got["validation"]) < min(r["timestamp"] for r in got["test"])


def test_negatives_k_disjoint_and_kinds(built):
    _, got = built
    leaf = {r["item_id"]: r["category_path"] for r in got["items"]}
    active = {r["item_id"] for r in got["items"] if r["active"]}
    user_pos: dict[str, set[str]] = {}
    for r in rows_of(got):
        user_pos.setdefault(r["user_id"], set()).add(r["item_id"])
    kinds_seen = set()
    for r in rows_of(got):
        negs, kinds = r["negatives"], r["negative_kinds"]
        assert len(negs) == CFG.negatives and len(kinds) == len(negs)
        assert len(set(negs)) == len(negs)
        assert not set(negs) & user_pos[r["user_id"]], r
        assert set(negs) <= active
        for n, k in zip(negs, kinds):
            kinds_seen.add(k)
            if k == "hard":
                assert leaf[n] == leaf[r["item_id"]]
    assert kinds_seen == {"popular", "uniform", "hard"}
    # one-item leaf and an item with no catalog row: no hard negative, still K
    for session, item in (("s6", "t0"), ("s6", "ghost")):
        row = find(got, "u2", session, item)
        assert "hard" not in row["negative_kinds"] and len(row["negatives"]) == CFG.negatives


def test_items_table(built):
    _, got = built
    items = {r["item_id"]: r for r in got["items"]}
    assert items["old1"]["active"] is False and items["old1"]["title"] is not None
    assert items["a0"]["active"] is True and items["a0"]["dt"] == CATALOG_DAYS[1]
    assert items["a0"]["title"] == f"title a0 {CATALOG_DAYS[1]}"  # latest snapshot wins
    ghost = items["ghost"]
    assert ghost["title"] is None and ghost["active"] is False and ghost["first_seen"] == ts(20, 8)
    assert items["a0"]["first_seen"] == ts(19, 0)  # in the first snapshot
    train = [r for r in got["train"]]
    for item_id, row in items.items():
        assert row["train_count"] == sum(r["item_id"] == item_id for r in train)
    # recent_count counts train positives only (validation p1 and test s0 are excluded)
    assert items["p1"]["recent_count"] == sum(r["weight"] for r in train if r["item_id"] == "p1")
    assert items["s0"]["recent_count"] == sum(r["weight"] for r in train if r["item_id"] == "s0")
    assert items["p2"]["recent_count"] >= 16.0


def test_negatives_depend_on_seed(spark):
    # Same seed, same output is shown end to end (test_training_partition_*).
    positives = spark.createDataFrame(
        [(f"u{i % 3}", f"s{i}", f"i{i % 7}") for i in range(12)], "user_id string, session_id string, item_id string"
    )

    def run(seed: int) -> dict:
        items = spark.createDataFrame(
            [(f"i{i}", True, i % 4, f"leaf{i % 2}") for i in range(20)],
            "item_id string, active boolean, train_count long, category_path string",
        )
        cfg = ExampleConfig(negatives=6, seed=seed)
        rows = sample_negatives(positives, items, cfg).collect()
        return {(r["session_id"], r["item_id"]): (r["negatives"], r["negative_kinds"]) for r in rows}

    first = run(13)
    assert first != run(99)
    assert all(len(negs) == 6 and "hard" in kinds for negs, kinds in first.values())


def test_negatives_exhaust_small_catalog_exactly(spark):
    # 8 active items, the user's 3 positives leave exactly 5: K=5 must find them all
    # (random draws alone rarely do), K=6 cannot and leaves the rows short for the checks.
    # No item has a category: no hard draws at all, the quota goes to uniform.
    positives = spark.createDataFrame(
        [("u", f"s{i}", f"i{i}") for i in range(3)], "user_id string, session_id string, item_id string"
    )
    items = spark.createDataFrame(
        [(f"i{i}", True, 1, None) for i in range(8)] + [("gone", False, 5, None)],
        "item_id string, active boolean, train_count long, category_path string",
    )
    for row in sample_negatives(positives, items, ExampleConfig(negatives=5)).collect():
        assert sorted(row["negatives"]) == [f"i{i}" for i in range(3, 8)]
        assert len(row["negative_kinds"]) == 5 and "hard" not in row["negative_kinds"]
    short = sample_negatives(positives, items, ExampleConfig(negatives=6)).collect()
    assert [len(r["negatives"]) for r in short] == [5, 5, 5]


def test_bad_sessions_raise(spark, frames):
    sessions, catalog = frames
    late = sessions.withColumn("timestamps", F.transform("timestamps", lambda t: t + F.expr("INTERVAL 10 DAYS")))
    with pytest.raises(TrainingDataError, match="after the window end"):
        build_examples(late, catalog, WEEK_END, CFG)
    ragged = sessions.withColumn("event_types", F.slice("event_types", 1, 1))
    with pytest.raises(TrainingDataError, match="different lengths"):
        build_examples(ragged, catalog, WEEK_END, CFG)


# --- checks ----------------------------------------------------------------------------------------


def test_leakage_checks_pass_on_good_output(built):
    out, _ = built
    leak = check_no_leakage(out["train"], out["validation"], out["test"])
    assert leak.passed, leak.description
    assert leak.metadata["history_items_checked"] > 0 and leak.metadata["rows_with_future_history"] == 0
    every = out["train"].unionByName(out["validation"]).unionByName(out["test"])
    disjoint = check_negatives_disjoint(out["train"], every.select("user_id", "item_id"))
    assert disjoint.passed, disjoint.description
    assert disjoint.metadata["negatives_checked"] > 0


def test_leakage_check_fails_on_time_order_and_future_history(built):
    out, _ = built
    # a test row disguised as train: train now reaches into the test days
    moved = out["train"].unionByName(out["test"].limit(1))
    bad = check_no_leakage(moved, out["validation"], out["test"])
    assert not bad.passed and bad.metadata["rows_out_of_time_order"] >= 1
    # u1's first positive (a1 at 10:05) is given s0 (first seen on the 24th) in its history
    future = out["train"].withColumn(
        "history",
        F.when((F.col("session_id") == "s1") & (F.col("item_id") == "a1"), F.array(F.lit("s0"))).otherwise(
            F.col("history")
        ),
    )
    bad = check_no_leakage(future, out["validation"], out["test"])
    assert not bad.passed
    assert bad.metadata["rows_with_future_history"] == 1 and bad.metadata["rows_out_of_time_order"] == 0


def test_negatives_check_fails_on_user_positive(built):
    out, _ = built
    every = out["train"].unionByName(out["validation"]).unionByName(out["test"])
    # u1 bought s0 in the test days; a train row of u1 gets it as a negative
    leaky = out["train"].withColumn(
        "negatives",
        F.when(F.col("session_id") == "s1", F.array_union(F.array(F.lit("s0")), F.col("negatives"))).otherwise(
            F.col("negatives")
        ),
    )
    bad = check_negatives_disjoint(leaky, every.select("user_id", "item_id"))
    assert not bad.passed and bad.metadata["negatives_user_positive"] == 2
    self_neg = out["train"].withColumn("negatives", F.array(F.col("item_id")))
    bad = check_negatives_disjoint(self_neg)
    assert not bad.passed and bad.metadata["negatives_equal_positive"] > 0


def test_check_counts_pass_and_fail():
    good = ExampleCounts(
        counts={"train": 10, "validation": 3, "test": 2},
        negatives_per_row=4,
        bad_negative_rows=0,
        negative_mix={"popular": 30, "uniform": 15, "hard": 15},
        users=5,
        items=20,
        active_items=20,
        timestamp_ranges={},
    )
    assert check_counts(good, CFG).passed
    assert ExampleCounts.from_json(good.to_json()) == good
    empty = replace(good, counts={"train": 12, "validation": 3, "test": 0})
    res = check_counts(empty, CFG)
    assert not res.passed and "test" in res.description
    wrong_k = replace(good, bad_negative_rows=1, negative_mix={"popular": 30, "uniform": 14, "hard": 15})
    assert not check_counts(wrong_k, CFG).passed
    skewed = replace(good, negative_mix={"popular": 30, "uniform": 28, "hard": 2})
    res = check_counts(skewed, CFG)
    assert not res.passed and "mix" in res.description


# --- the partition on a lake --------------------------------------------------------------


def _assert_partition(lake, counts: ExamplesSummary, expected: dict) -> None:
    """The lake partition is complete, typed per contract, and equal to `build_examples` on
    the same data read as one file (so the output does not depend on input layout)."""
    base = f"training/week={WEEK}"
    tables = {
        name: lake.read_parquet(f"{base}/{name}")
        for name in ("train", "validation", "test", "items", "user_histories", "user_seen")
    }
    for s in ("train", "validation", "test"):
        t = tables[s]
        assert t.num_rows == counts.counts[s] > 0
        assert t.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
        assert t.schema.field("hour").type == pa.int32()
        for col in ("history", "negatives", "negative_kinds"):
            assert t.schema.field(col).type.value_type == pa.string()
        assert set(t.column("split").to_pylist()) == {s}
    assert tables["items"].num_rows == counts.items
    assert tables["user_histories"].num_rows == counts.users
    assert sum(counts.negative_mix.values()) == CFG.negatives * sum(counts.counts.values())
    assert counts.bad_negative_rows == 0
    # the keys the training_examples asset reads
    assert ExamplesSummary.from_json(counts.to_json()) == counts  # summary.json round trip
    assert counts.split_ranges["validation"] == ["2026-10-22", "2026-10-23"]
    assert counts.window == ["2026-10-19", "2026-10-25"]
    outcome = check_counts(counts, CFG, tolerance=0.25)  # tiny catalog: many hard draws fall back
    assert outcome.passed, outcome.description
    key = lambda r: (r["session_id"], r["item_id"])  # noqa: E731
    for s in ("train", "validation", "test"):
        assert sorted(tables[s].to_pylist(), key=key) == sorted(expected[s], key=key)
    assert sorted(tables["user_histories"].to_pylist(), key=lambda r: r["user_id"]) == sorted(
        expected["user_histories"], key=lambda r: r["user_id"]
    )
    seen = tables["user_seen"]
    assert seen.schema.field("user_id").type == pa.string() and seen.schema.field("seen").type == pa.list_(pa.string())
    assert counts.files["user_seen"] >= 1 and seen.num_rows == counts.users
    assert sorted(seen.to_pylist(), key=lambda r: r["user_id"]) == sorted(
        expected["user_seen"], key=lambda r: r["user_id"]
    )


def test_training_partition_local(spark, local_lake, tmp_path, built):
    write_lake(local_lake, make_sessions())
    counts = training_partition(spark, local_lake, WEEK, CFG, tmp_path / "stage")
    assert counts.window_days_present == [f"2026-10-{d}" for d in range(19, 26)]
    assert counts.catalog_days_present == list(CATALOG_DAYS)
    _assert_partition(local_lake, counts, built[1])


def test_training_partition_s3(spark, s3_lake, tmp_path, built):
    write_lake(s3_lake, make_sessions())
    counts = training_partition(spark, s3_lake, WEEK, CFG)
    _assert_partition(s3_lake, counts, built[1])


def test_training_partition_errors_name_the_days(spark, local_lake, tmp_path):
    write_lake(local_lake, make_sessions(), session_days={"2026-10-19", "2026-10-20", "2026-10-22"})
    with pytest.raises(TrainingDataError, match=r"test split.*2026-10-19', '2026-10-20', '2026-10-22'"):
        training_partition(spark, local_lake, WEEK, CFG, tmp_path / "stage")
    assert not local_lake.has_data(f"training/week={WEEK}")
    with pytest.raises(ValueError, match="Monday"):
        training_partition(spark, local_lake, "2026-10-20", CFG)
