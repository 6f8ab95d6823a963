"""The synthetic marketplace generator: landing contract, catalog churn, faults, realism."""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from recsys_dagster.contract import (
    CATALOG_FIELDS,
    CATEGORY_SEPARATOR,
    CONDITIONS,
    DEVICE_TYPES,
    EVENT_FIELDS,
    EVENT_TYPES,
)
from recsys_dagster.datagen import FAULT_KINDS, DayData, GeneratorConfig, catalog_key, events_key, generate, simulate
from recsys_dagster.lake import Lake

# Spans the end of summer time (2026-10-25), so both +02:00 and +01:00 offsets occur.
START = date(2026, 10, 23)
SMALL = GeneratorConfig(start_date=START, days=5, users=600, items=500, seed=11)
TINY = GeneratorConfig(start_date=START, days=2, users=60, items=120, seed=3)
DEMO = GeneratorConfig(start_date=date(2026, 10, 5))  # what `recsys demo` generates, without faults


@pytest.fixture(scope="module")
def clean_days() -> list[DayData]:
    return list(simulate(SMALL))


@pytest.fixture(scope="module")
def faulty_days() -> list[DayData]:
    return list(simulate(GeneratorConfig(start_date=START, days=3, users=200, items=300, seed=5, fault_rate=0.1)))


def _events(days: list[DayData]) -> list[dict[str, Any]]:
    out = []
    for d in days:
        for line in d.event_lines:
            rec = json.loads(line)
            rec["_dt"] = d.dt
            out.append(rec)
    return out


def _catalog(day: DayData) -> dict[str, dict[str, Any]]:
    return {r["item_id"]: r for r in map(json.loads, day.catalog_lines)}


def _utc(ts: str) -> datetime:
    parsed = datetime.fromisoformat(ts)
    assert parsed.tzinfo is not None, ts
    return parsed.astimezone(UTC)


def test_clean_event_lines_follow_the_landing_contract(clean_days):
    events = _events(clean_days)
    assert 2_000 < len(events) == sum(d.summary.clean_events for d in clean_days)
    offsets = collections.Counter()
    extras = collections.Counter()
    for rec in events:
        for f in EVENT_FIELDS:
            assert f in rec, (f, rec)
        for f in ("event_id", "user_id", "item_id", "event_type", "timestamp", "device_type"):
            assert isinstance(rec[f], str), (f, rec)
        assert rec["session_id"] is None or isinstance(rec["session_id"], str)
        assert re.fullmatch(r"u\d{6}", rec["user_id"]) and re.fullmatch(r"i\d{6}", rec["item_id"])
        assert rec["event_type"] in EVENT_TYPES and rec["device_type"] in DEVICE_TYPES
        assert _utc(rec["timestamp"]).date().isoformat() == rec["_dt"], rec
        offsets[rec["timestamp"][-6:] if not rec["timestamp"].endswith("Z") else "Z"] += 1
        extras.update(set(rec) - set(EVENT_FIELDS) - {"_dt"})
    assert len({r["event_id"] for r in events}) == len(events)
    assert offsets["Z"] > offsets["+02:00"] > 0 and offsets["+01:00"] > 0
    assert extras["app_version"] > 0 and extras["referrer"] > 0
    assert 0 < sum(r["session_id"] is None for r in events) < 0.1 * len(events)
    assert set(collections.Counter(r["event_type"] for r in events)) == set(EVENT_TYPES)


def test_catalog_lines_follow_the_landing_contract(clean_days):
    for day in clean_days:
        items = [json.loads(line) for line in day.catalog_lines]
        assert len(items) == len({r["item_id"] for r in items}) == day.summary.catalog_items
        for r in items:
            assert set(r) == set(CATALOG_FIELDS)
            assert isinstance(r["price"], (int, float)) and r["price"] >= 0
            assert r["currency"] == "EUR" and r["condition"] in CONDITIONS
            assert len(r["category_path"].split(CATEGORY_SEPARATOR)) == 3
            assert all(isinstance(r[f], str) and r[f] for f in CATALOG_FIELDS if f != "price")
            assert r["image_url"].startswith("https://")
            assert _utc(r["created_at"]) < datetime.fromisoformat(f"{day.dt}T00:00:00+00:00") + timedelta(days=1)
    leaves = {json.loads(line)["category_path"] for d in clean_days for line in d.catalog_lines}
    assert len(leaves) >= 40
    assert any(t.startswith("iPhone") for t in (json.loads(x)["title"] for d in clean_days for x in d.catalog_lines))


def test_events_only_reference_items_listed_at_that_time(clean_days):
    for day in clean_days:
        snapshot = _catalog(day)
        for rec in map(json.loads, day.event_lines):
            item = snapshot.get(rec["item_id"])
            assert item is not None, rec
            assert _utc(item["created_at"]) <= _utc(rec["timestamp"]), (rec, item)


def test_new_listings_appear_and_sold_items_leave(clean_days):
    seen_gone: set[str] = set()
    for prev, day in zip(clean_days, clean_days[1:]):
        before, now = set(_catalog(prev)), _catalog(day)
        new = {i for i, r in now.items() if _utc(r["created_at"]).date().isoformat() == day.dt}
        assert new and new.isdisjoint(before) and new == set(now) - before
        assert len(new) == day.summary.new_items == SMALL.new_per_day
        gone = before - set(now)
        assert len(gone) == prev.summary.sold_items > 0
        assert seen_gone.isdisjoint(now), "a sold item came back"
        seen_gone |= gone
        purchased = {r["item_id"] for r in map(json.loads, prev.event_lines) if r["event_type"] == "purchase"}
        assert purchased & gone, "no purchase sold its item"


def test_sessions_cross_midnight_into_the_next_file(clean_days):
    days_of = collections.defaultdict(set)
    for rec in _events(clean_days):
        if rec["session_id"]:
            days_of[rec["session_id"]].add(rec["_dt"])
    crossing = [s for s, ds in days_of.items() if len(ds) == 2]
    assert crossing and all(len(ds) <= 2 for ds in days_of.values())


def test_popularity_is_skewed(clean_days):
    counts = np.sort(np.array(list(collections.Counter(r["item_id"] for r in _events(clean_days)).values())))[::-1]
    top = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top > 0.3, top


def test_users_concentrate_on_their_interests(clean_days):
    leaf_of = {}
    for d in clean_days:
        leaf_of.update({i: r["category_path"] for i, r in _catalog(d).items()})
    per_user: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for rec in _events(clean_days):
        per_user[rec["user_id"]][leaf_of[rec["item_id"]]] += 1
    shares = [sum(n for _, n in c.most_common(3)) / sum(c.values()) for c in per_user.values() if sum(c.values()) >= 15]
    assert len(shares) > 50
    assert np.median(shares) > 0.75
    # ... and not everyone on the same leaves: that is what beats popularity.
    top_leaves = collections.Counter(c.most_common(1)[0][0] for c in per_user.values())
    assert top_leaves.most_common(1)[0][1] < 0.2 * len(per_user)


def test_activity_is_heavy_tailed(clean_days):
    counts = np.sort(np.array(list(collections.Counter(r["user_id"] for r in _events(clean_days)).values())))[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()
    assert np.median(counts) < counts.mean()


@dataclass
class Log:
    """A generated run as integer columns: events (user, item, day) and per-day listings."""

    user: np.ndarray
    item: np.ndarray
    day: np.ndarray
    leaf: np.ndarray  # per item: its category
    listed_day: np.ndarray  # per item: day index it was listed on (< 0 before the run)
    snapshots: list[np.ndarray]  # per day: items in that day's catalog file

    @property
    def n_items(self) -> int:
        return len(self.leaf)

    def seen_before(self, day: int) -> np.ndarray:
        """[n_users, n_items] bool: the user touched the item on an earlier day."""
        seen = np.zeros((self.user.max() + 1, self.n_items), dtype=bool)
        m = self.day < day
        seen[self.user[m], self.item[m]] = True
        return seen


def _log(days: list[DayData], start: date) -> Log:
    item_of: dict[str, int] = {}
    user_of: dict[str, int] = {}
    paths: dict[str, int] = {}
    leaf: dict[int, int] = {}
    listed: dict[int, int] = {}
    cols: list[tuple[int, int, int]] = []
    snapshots = []
    for d, day in enumerate(days):
        snap = []
        for r in map(json.loads, day.catalog_lines):
            i = item_of.setdefault(r["item_id"], len(item_of))
            leaf[i] = paths.setdefault(r["category_path"], len(paths))
            listed[i] = (_utc(r["created_at"]).date() - start).days
            snap.append(i)
        snapshots.append(np.array(snap))
        for r in map(json.loads, day.event_lines):
            cols.append((user_of.setdefault(r["user_id"], len(user_of)), item_of[r["item_id"]], d))
    u, i, d = np.array(cols).T
    n = len(item_of)
    return Log(u, i, d, np.array([leaf[k] for k in range(n)]), np.array([listed[k] for k in range(n)]), snapshots)


@pytest.fixture(scope="module")
def demo_log() -> Log:
    """The default `recsys demo` data (21 days, 2,000 users, 3,000 items, seed 7), clean."""
    return _log(list(simulate(DEMO)), DEMO.start_date)


def test_demo_activity_has_a_long_tail(demo_log):
    per_user = np.sort(np.bincount(demo_log.user))[::-1]
    top = per_user[: len(per_user) // 20]
    # Heavy users have hundreds of events over the three weeks; most have a few dozen.
    assert top.min() > 200 and top.sum() > 0.25 * per_user.sum()
    assert per_user.max() > 800 and np.median(per_user) < 60


def _next_day_recall(log: Log, counts: np.ndarray, day: int, k: int = 20) -> float:
    """Recall@k of ranking day `day`'s listings by `counts` for each user's new items of that day."""
    seen = log.seen_before(day)
    targets = np.zeros_like(seen)
    targets[log.user[log.day == day], log.item[log.day == day]] = True
    targets &= ~seen
    users = np.flatnonzero(targets.any(axis=1))
    cand = log.snapshots[day]
    order = cand[np.argsort(-counts[cand], kind="stable")][: 20 * k]
    unseen = ~seen[np.ix_(users, order)]
    top = unseen & (np.cumsum(unseen, axis=1) <= k)
    hits = (targets[np.ix_(users, order)] & top).sum(axis=1)
    return float(np.mean(hits / targets[users].sum(axis=1)))


def test_recent_popularity_predicts_the_next_day_better_than_all_time(demo_log):
    log = demo_log
    recent, all_time = [], []
    for day in range(8, 21):
        before = log.day < day
        last3 = before & (log.day >= day - 3)
        recent.append(_next_day_recall(log, np.bincount(log.item[last3], minlength=log.n_items), day))
        all_time.append(_next_day_recall(log, np.bincount(log.item[before], minlength=log.n_items), day))
    recent, all_time = np.array(recent), np.array(all_time)
    assert recent.mean() > 1.15 * all_time.mean() and (recent > all_time).mean() >= 0.75, (recent, all_time)
    # Strong enough to be a real baseline: a few hot items draw a good share of new interest.
    assert recent.mean() > 0.06, recent


def test_popularity_concentrates_and_drifts(demo_log):
    log = demo_log
    counts = np.sort(np.bincount(log.item, minlength=log.n_items))[::-1]
    assert counts[: log.n_items // 100].sum() > 0.1 * counts.sum()
    first = np.argsort(-np.bincount(log.item[log.day < 7], minlength=log.n_items))[:20]
    last = np.argsort(-np.bincount(log.item[log.day >= 14], minlength=log.n_items))[:20]
    assert len(set(first.tolist()) & set(last.tolist())) < 5


def test_listings_draw_most_interest_in_their_first_days(demo_log):
    log = demo_log
    per_day = np.zeros((len(log.snapshots), log.n_items))
    np.add.at(per_day, (log.day, log.item), 1)
    # Events per listed item-day by age, over items listed during the run (their whole life is seen).
    rate = []
    for age in range(12):
        n_items = events = 0
        for d, snap in enumerate(log.snapshots):
            items = snap[(log.listed_day[snap] == d - age) & (log.listed_day[snap] >= 0)]
            n_items += len(items)
            events += per_day[d, items].sum()
        rate.append(events / n_items)
    assert np.mean(rate[:3]) > 1.8 * np.mean(rate[7:]), rate
    assert rate[1] > rate[4] > rate[10], rate


def test_users_come_back_to_what_they_looked_at(demo_log):
    log = demo_log
    first_day = np.full(log.user.max() + 1, 99)
    np.minimum.at(first_day, log.user, log.day)
    later = log.day > first_day[log.user]
    # For each event on a later day: was its category / the item itself touched on an earlier day?
    leaf_key = log.user * 1000 + log.leaf[log.item]
    item_key = log.user * 10**7 + log.item
    shares = []
    for key in (leaf_key, item_key):
        first = {}
        for k, d in zip(key.tolist(), log.day.tolist()):
            first.setdefault(k, d)
        before = np.array([first[k] < d for k, d in zip(key.tolist(), log.day.tolist())])
        shares.append(before[later].mean())
    assert shares[0] > 0.75 and shares[1] > 0.35, shares


def _classify(rec_line: str, dt: str, seen: set[str], known: set[str]) -> str | None:
    """A reference validator in the contract's check order; None = clean."""
    try:
        rec = json.loads(rec_line)
    except json.JSONDecodeError:
        return "malformed_json"
    if not isinstance(rec, dict):
        return "not_an_object"
    if any(f not in rec for f in EVENT_FIELDS):
        return "missing_field"
    strict = [f for f in EVENT_FIELDS if f != "session_id"]
    if any(rec[f] is None for f in strict):
        return "null_field"
    if any(not isinstance(rec[f], str) for f in strict) or not isinstance(rec["session_id"], (str, type(None))):
        return "wrong_type"
    if rec["event_type"] not in EVENT_TYPES:
        return "invalid_event_type"
    if rec["device_type"] not in DEVICE_TYPES:
        return "invalid_device_type"
    try:
        ts = _utc(rec["timestamp"])
    except (ValueError, AssertionError):
        return "invalid_timestamp"
    if ts.date().isoformat() != dt:
        return "timestamp_outside_partition"
    if rec["event_id"] in seen:
        return "duplicate_event_id"
    seen.add(rec["event_id"])
    if rec["item_id"] not in known:
        return "unknown_item"
    return None


def test_fault_counts_match_what_a_validator_finds(faulty_days):
    prev_items: set[str] = set()
    for day in faulty_days:
        items = set(_catalog(day))
        seen: set[str] = set()
        found = collections.Counter(_classify(line, day.dt, seen, items | prev_items) for line in day.event_lines)
        clean = found.pop(None)
        s = day.summary
        assert {k: v for k, v in s.faults.items() if v} == dict(found)
        assert set(s.faults) == set(FAULT_KINDS) and all(v > 0 for v in s.faults.values())
        assert clean == s.clean_events and s.event_lines == len(day.event_lines)
        n_faults = sum(s.faults.values())
        records_before_faults = s.clean_events + n_faults - s.faults["duplicate_event_id"]
        assert abs(n_faults - 0.1 * records_before_faults) <= 1
        prev_items = items


def test_deterministic_bytes_and_seed_sensitivity(tmp_path):
    lakes = [Lake.from_uri(f"file://{tmp_path / name}") for name in ("a", "b", "c")]
    cfg = GeneratorConfig(start_date=START, days=2, users=80, items=150, seed=21, fault_rate=0.05)
    generate(lakes[0], cfg)
    generate(lakes[1], cfg)
    generate(lakes[2], GeneratorConfig(**{**cfg.__dict__, "seed": 22}))
    keys = lakes[0].list_keys()
    assert keys == lakes[1].list_keys() == lakes[2].list_keys() and len(keys) == 4
    for k in keys:
        assert lakes[0].get_bytes(k) == lakes[1].get_bytes(k)
    assert any(lakes[0].get_bytes(k) != lakes[2].get_bytes(k) for k in keys)


def test_generate_writes_the_landing_zone_and_a_summary(local_lake):
    summary = generate(local_lake, TINY)
    expected = list(simulate(TINY))
    assert [d.dt for d in summary.days] == ["2026-10-23", "2026-10-24"]
    for day in expected:
        assert list(local_lake.iter_jsonl_gz_lines(events_key(day.dt))) == day.event_lines
        assert list(local_lake.iter_jsonl_gz_lines(catalog_key(day.dt))) == day.catalog_lines
    assert events_key("2026-10-23") == "landing/events/dt=2026-10-23/part-00000.jsonl.gz"
    assert catalog_key("2026-10-23") == "landing/catalog/dt=2026-10-23/catalog.jsonl.gz"
    d = json.loads(json.dumps(summary.to_dict()))
    assert d["totals"]["event_lines"] == sum(len(x.event_lines) for x in expected) > 0
    assert d["config"]["start_date"] == "2026-10-23" and d["elapsed_s"] >= 0
    assert d["days"][0]["faults"] == {k: 0 for k in FAULT_KINDS}


def test_generate_on_s3(s3_lake):
    summary = generate(s3_lake, TINY)
    assert s3_lake.list_partitions("landing/events") == ["2026-10-23", "2026-10-24"]
    lines = list(s3_lake.iter_jsonl_gz_lines(events_key("2026-10-24")))
    assert len(lines) == summary.days[1].event_lines > 0
    assert s3_lake.exists(catalog_key("2026-10-24"))


@pytest.mark.parametrize(
    "bad",
    [
        {"fault_rate": 0.9},
        {"fault_rate": -0.1},
        {"days": 0},
        {"users": 0},
        {"sold_fraction_per_day": 1.0},
        {"new_items_per_day": -1},
        {"start_date": "2026-10-05"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises((ValueError, TypeError)):
        GeneratorConfig(**{"start_date": START, **bad})


def test_default_new_items_is_about_three_percent():
    assert GeneratorConfig(start_date=START).new_per_day == 90
    assert GeneratorConfig(start_date=START, new_items_per_day=0).new_per_day == 0
