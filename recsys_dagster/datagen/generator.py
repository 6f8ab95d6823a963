"""The synthetic marketplace, day by day, into the landing zone.

Day D's catalog file is every item listed and unsold at the start of D plus those listed
during D; D's events reference only those (an item only once it is listed). Sessions that
run past midnight continue into D+1's file. A purchase usually sells the item, and sold
items are gone from the next day's snapshot. What changes from day to day (listings fading
with age, bursts, category trends, user streaks and memory) lives in `dynamics.World`.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from recsys_dagster.contract import DEVICE_TYPES, EVENT_TYPES, LANDING_CATALOG, LANDING_EVENTS, day_prefix
from recsys_dagster.datagen.catalog import Catalog, item_key, user_key
from recsys_dagster.datagen.clock import MS_PER_DAY, cet_offset_minutes, day_start_ms, iso_ms
from recsys_dagster.datagen.dynamics import World
from recsys_dagster.datagen.faults import FAULT_KINDS, inject_faults
from recsys_dagster.datagen.sessions import DayEvents, simulate_day
from recsys_dagster.datagen.users import Users, make_users
from recsys_dagster.lake import Lake

INITIAL_LISTING_DAYS = 60  # the first snapshot's items were listed over the two months before
P_PURCHASE_SELLS = 0.8  # a purchase sells the item (sometimes the deal falls through)
MAX_FAULT_RATE = 0.5
GZIP_LEVEL = 6


@dataclass(frozen=True)
class GeneratorConfig:
    start_date: date
    days: int = 21
    users: int = 2000
    items: int = 3000
    seed: int = 7
    fault_rate: float = 0.0  # fraction of event lines corrupted (0 = clean)
    new_items_per_day: int | None = None  # default ~3% of `items`
    sold_fraction_per_day: float = 0.02  # listed items leaving per day (bought here count first)

    def __post_init__(self) -> None:
        if not isinstance(self.start_date, date):
            raise TypeError(f"start_date must be a datetime.date, got {type(self.start_date).__name__}")
        for name in ("days", "users", "items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.fault_rate <= MAX_FAULT_RATE:
            raise ValueError(f"fault_rate must be in [0, {MAX_FAULT_RATE}], got {self.fault_rate}")
        if self.new_items_per_day is not None and self.new_items_per_day < 0:
            raise ValueError(f"new_items_per_day must be >= 0, got {self.new_items_per_day}")
        if not 0.0 <= self.sold_fraction_per_day < 1.0:
            raise ValueError(f"sold_fraction_per_day must be in [0, 1), got {self.sold_fraction_per_day}")

    @property
    def new_per_day(self) -> int:
        if self.new_items_per_day is not None:
            return self.new_items_per_day
        return max(1, round(0.03 * self.items))

    def dates(self) -> list[str]:
        return [(self.start_date + timedelta(days=i)).isoformat() for i in range(self.days)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        return d


@dataclass
class DaySummary:
    dt: str
    event_lines: int  # lines written, faulty ones included
    clean_events: int  # lines that should pass validation
    sessions: int  # sessions started on the day
    catalog_items: int
    new_items: int
    sold_items: int  # items that sold on the day (gone from the next snapshot)
    events_by_type: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)


@dataclass
class GenerationSummary:
    config: dict[str, Any]
    days: list[DaySummary]
    elapsed_s: float
    lake_uri: str | None = None

    @property
    def totals(self) -> dict[str, Any]:
        return {
            "event_lines": sum(d.event_lines for d in self.days),
            "clean_events": sum(d.clean_events for d in self.days),
            "sessions": sum(d.sessions for d in self.days),
            "new_items": sum(d.new_items for d in self.days),
            "sold_items": sum(d.sold_items for d in self.days),
            "catalog_items_last_day": self.days[-1].catalog_items if self.days else 0,
            "events_by_type": {t: sum(d.events_by_type.get(t, 0) for d in self.days) for t in EVENT_TYPES},
            "faults": {k: sum(d.faults.get(k, 0) for d in self.days) for k in FAULT_KINDS},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "lake_uri": self.lake_uri,
            "elapsed_s": round(self.elapsed_s, 3),
            "totals": self.totals,
            "days": [asdict(d) for d in self.days],
        }


@dataclass
class DayData:
    """One landed day: the raw lines of both files and what went into them."""

    dt: str
    event_lines: list[str]
    catalog_lines: list[str]
    summary: DaySummary


def events_key(dt: str) -> str:
    return f"{day_prefix(LANDING_EVENTS, dt)}/part-00000.jsonl.gz"


def catalog_key(dt: str) -> str:
    return f"{day_prefix(LANDING_CATALOG, dt)}/catalog.jsonl.gz"


def _records(ev: DayEvents, users: Users, user_ids: list[str], catalog: Catalog, dt_tag: str) -> list[dict[str, Any]]:
    """Landing records in time order; event ids are unique across days (`e<day>-<serial>`)."""
    offsets = np.where(users.local_offset[ev.user], cet_offset_minutes(ev.ts_ms), 0)
    stamps = iso_ms(ev.ts_ms, offsets)
    app_device = np.isin(ev.device, [DEVICE_TYPES.index("mobile"), DEVICE_TYPES.index("tablet")])
    out: list[dict[str, Any]] = []
    for j, (u, it, et, dev, sk, ref, app) in enumerate(
        zip(
            ev.user.tolist(),
            ev.item.tolist(),
            ev.event_type.tolist(),
            ev.device.tolist(),
            ev.session_key.tolist(),
            ev.referrer.tolist(),
            app_device.tolist(),
        )
    ):
        rec: dict[str, Any] = {
            "event_id": f"e{dt_tag}-{j:07d}",
            "user_id": user_ids[u],
            "session_id": sk,
            "item_id": catalog.ids[it],
            "event_type": EVENT_TYPES[et],
            "timestamp": stamps[j],
            "device_type": DEVICE_TYPES[dev],
        }
        # Unknown fields some clients send; consumers must keep them.
        if app and users.app_version[u] is not None:
            rec["app_version"] = users.app_version[u]
        if ref is not None:
            rec["referrer"] = ref
        out.append(rec)
    return out


def _arrival_order(rng: np.random.Generator, ev: DayEvents) -> np.ndarray:
    """Lines land in arrival order: seconds behind event time, minutes for offline phones."""
    delay = rng.exponential(1500.0, len(ev))
    offline = (ev.device == DEVICE_TYPES.index("mobile")) & (rng.random(len(ev)) < 0.03)
    delay += np.where(offline, rng.uniform(60_000, 90 * 60_000, len(ev)), 0.0)
    return np.argsort(ev.ts_ms + delay, kind="stable")


def simulate(cfg: GeneratorConfig) -> Iterator[DayData]:
    """Generate the days in order, in memory (deterministic for `cfg`)."""
    root = np.random.SeedSequence(cfg.seed)
    world_seq, *day_seqs = root.spawn(1 + cfg.days)
    world = np.random.default_rng(world_seq)
    users = make_users(world, cfg.users)
    user_ids = [user_key(u) for u in range(cfg.users)]
    catalog = Catalog(cfg.items + cfg.days * cfg.new_per_day)
    start0 = day_start_ms(cfg.start_date)
    created = start0 - (world.random(cfg.items) * INITIAL_LISTING_DAYS * MS_PER_DAY).astype(np.int64)
    catalog.add(world, np.sort(created))
    state = World.create(world, cfg.users, catalog.capacity)
    # Ids beyond every real one: never in any snapshot.
    unknown_base = catalog.capacity + 1_000_000
    # The after-midnight tail of the previous day's sessions, and its records.
    carried: DayEvents | None = None
    carried_records: list[dict[str, Any]] = []

    for d, dt in enumerate(cfg.dates()):
        rng = np.random.default_rng(day_seqs[d])
        day_date = cfg.start_date + timedelta(days=d)
        start = start0 + d * MS_PER_DAY
        dt_tag = dt.replace("-", "")
        new_ts = np.sort(start + (rng.random(cfg.new_per_day) * MS_PER_DAY).astype(np.int64))
        new_rows = catalog.add(rng, new_ts)
        snapshot = catalog.snapshot(d, start)
        in_snapshot = np.zeros(catalog.n, dtype=bool)
        in_snapshot[snapshot] = True

        state.start_day(rng, d, day_date, snapshot, new_rows)
        started = simulate_day(rng, users, catalog, snapshot, state, d, start, dt_tag)
        state.remember(started.user, started.item, started.event_type, started.ts_ms)
        # Ids are given in generation order, before a session is split at midnight.
        started_records = _records(started, users, user_ids, catalog, dt_tag)
        today = started.ts_ms < start + MS_PER_DAY
        parts = [started.take(np.flatnonzero(today))]
        records = [r for r, keep in zip(started_records, today.tolist()) if keep]
        if carried is not None:
            kept = np.flatnonzero(in_snapshot[carried.item])  # items sold yesterday are gone
            parts.insert(0, carried.take(kept))
            records = [carried_records[i] for i in kept.tolist()] + records
        ev = DayEvents.concat(parts)
        carried = started.take(np.flatnonzero(~today))
        carried_records = [r for r, keep in zip(started_records, today.tolist()) if not keep]

        order = _arrival_order(rng, ev)
        records = [records[i] for i in order.tolist()]
        unknown_ids = [item_key(unknown_base + d * 10_000 + k) for k in range(97)]
        lines, faults = inject_faults(rng, records, cfg.fault_rate, start, unknown_ids)

        sold = _sell(rng, catalog, ev, snapshot, d, cfg.sold_fraction_per_day)
        counts = np.bincount(ev.event_type, minlength=len(EVENT_TYPES))
        n_faulty_in_place = sum(v for k, v in faults.items() if k != "duplicate_event_id")
        summary = DaySummary(
            dt=dt,
            event_lines=len(lines),
            clean_events=len(ev) - n_faulty_in_place,
            sessions=started.n_sessions,
            catalog_items=len(snapshot),
            new_items=len(new_rows),
            sold_items=sold,
            events_by_type={t: int(c) for t, c in zip(EVENT_TYPES, counts.tolist())},
            faults=faults,
        )
        yield DayData(dt, lines, [catalog.lines[i] for i in snapshot.tolist()], summary)


def _sell(
    rng: np.random.Generator, catalog: Catalog, ev: DayEvents, snapshot: np.ndarray, day: int, fraction: float
) -> int:
    """Mark items sold on `day`: most purchased ones, topped up with items sold elsewhere."""
    purchased = np.unique(ev.item[ev.event_type == EVENT_TYPES.index("purchase")])
    purchased = purchased[catalog.sold_day[purchased] < 0]
    sold = purchased[rng.random(len(purchased)) < P_PURCHASE_SELLS]
    catalog.sold_day[sold] = day
    target = int(round(fraction * len(snapshot)))
    if target > len(sold):
        rest = snapshot[catalog.sold_day[snapshot] < 0]
        extra = rng.choice(rest, size=min(target - len(sold), len(rest)), replace=False)
        catalog.sold_day[extra] = day
        return len(sold) + len(extra)
    return len(sold)


def gzip_lines(lines: list[str]) -> bytes:
    """The bytes `Lake.write_jsonl_gz` writes (one line each, mtime 0), at gzip level 6:
    its default level 9 is 4-5x slower for ~10% smaller files, most of the demo's time."""
    body = "".join(line + "\n" for line in lines).encode()
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def generate(lake: Lake, cfg: GeneratorConfig) -> GenerationSummary:
    """Write every day's landing files (events and catalog) into `lake`."""
    t0 = time.perf_counter()
    days: list[DaySummary] = []
    for day in simulate(cfg):
        lake.put_bytes(events_key(day.dt), gzip_lines(day.event_lines))
        lake.put_bytes(catalog_key(day.dt), gzip_lines(day.catalog_lines))
        days.append(day.summary)
    return GenerationSummary(cfg.to_dict(), days, time.perf_counter() - t0, lake.uri)
