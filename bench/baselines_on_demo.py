"""Simple baselines on the demo's landing data: how hard is the synthetic marketplace?

Generates the default demo (`recsys demo`: 21 days from 2026-10-05, 2,000 users, 3,000
items, seed 7, 1% faulty lines) into a temporary local lake, reads the landing events back
(faulty lines dropped as ingestion would), and scores Recall@20 on the last 2 days:

- targets: per user, the distinct items touched in the test days and never before;
- ranked universe: the catalog snapshot of the first test day (what was for sale), items
  the user touched before excluded;
- all-time popularity: events per item over all of train;
- recent popularity: events per item over the last N days before the test, N chosen on
  the 2 days before the test (validation, trained on what precedes them);
- item-kNN: cosine of the binary user x item matrix of train, a user's score the sum of
  similarities to the items of their history (ties, and users without history, by recent
  popularity, as serving answers unknown users).

Real logs (Ji et al., SIGIR 2020) have recent popularity well above all-time popularity
and item-kNN at least as strong as recent popularity.

    .venv/bin/python bench/baselines_on_demo.py --out bench/results/baselines_on_demo.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_dagster.contract import DEVICE_TYPES, EVENT_TYPES  # noqa: E402
from recsys_dagster.datagen import GeneratorConfig, catalog_key, events_key, generate  # noqa: E402
from recsys_dagster.lake import Lake  # noqa: E402

K = 20
TEST_DAYS = 2
RECENT_N = (1, 2, 3, 5, 7, 10, 14)


class Log:
    """Clean landing events as integer columns, plus each day's catalog snapshot."""

    def __init__(self, lake: Lake, dates: list[str]):
        self.item_of: dict[str, int] = {}
        self.user_of: dict[str, int] = {}
        users, items, days = [], [], []
        self.snapshots: list[np.ndarray] = []
        prev: set[str] = set()
        for d, dt in enumerate(dates):
            snap = [json.loads(line)["item_id"] for line in lake.iter_jsonl_gz_lines(catalog_key(dt))]
            self.snapshots.append(np.array([self._item(x) for x in snap], dtype=np.int64))
            known, seen = set(snap) | prev, set()
            for line in lake.iter_jsonl_gz_lines(events_key(dt)):
                rec = _clean(line, dt, known, seen)
                if rec is not None:
                    users.append(self.user_of.setdefault(rec["user_id"], len(self.user_of)))
                    items.append(self._item(rec["item_id"]))
                    days.append(d)
            prev = set(snap)
        self.user, self.item, self.day = (np.array(x, dtype=np.int64) for x in (users, items, days))
        self.n_users, self.n_items, self.n_days = len(self.user_of), len(self.item_of), len(dates)

    def _item(self, item_id: str) -> int:
        return self.item_of.setdefault(item_id, len(self.item_of))


def _clean(line: str, dt: str, known: set[str], seen: set[str]) -> dict | None:
    """The event if ingestion would accept it (the generator's fault kinds), else None."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not all(isinstance(rec.get(f), str) for f in ("event_id", "user_id", "item_id")):
        return None
    if rec.get("event_type") not in EVENT_TYPES or rec.get("device_type") not in DEVICE_TYPES:
        return None
    if "session_id" not in rec or not isinstance(rec["session_id"], (str, type(None))):
        return None
    try:
        day = datetime.fromisoformat(rec["timestamp"]).astimezone(UTC).date().isoformat()
    except (KeyError, TypeError, ValueError):
        return None
    if day != dt or rec["event_id"] in seen or rec["item_id"] not in known:
        return None
    seen.add(rec["event_id"])
    return rec


def _split(log: Log, first_target_day: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Train mask (days before), per-user targets of the `TEST_DAYS` from `first_target_day`, and users with any."""
    train = log.day < first_target_day
    window = (log.day >= first_target_day) & (log.day < first_target_day + TEST_DAYS)
    before = np.zeros((log.n_users, log.n_items), dtype=bool)
    before[log.user[train], log.item[train]] = True
    touched = np.zeros_like(before)
    touched[log.user[window], log.item[window]] = True
    touched &= ~before
    users = np.flatnonzero(touched.any(axis=1))
    return train, [np.flatnonzero(touched[u]) for u in users], users


def _recall(scores: np.ndarray, seen: np.ndarray, targets: list[np.ndarray], universe: np.ndarray) -> float:
    """Mean Recall@K; `scores` [n_query_users, n_items], only `universe` items rankable, seen ones not."""
    s = np.full(scores.shape, -np.inf)
    s[:, universe] = scores[:, universe]
    s[seen] = -np.inf
    top = np.argpartition(-s, K, axis=1)[:, :K]
    ok = np.isfinite(np.take_along_axis(s, top, axis=1))
    return float(np.mean([np.isin(t, top[r][ok[r]]).sum() / len(t) for r, t in enumerate(targets)]))


def _counts(log: Log, mask: np.ndarray) -> np.ndarray:
    return np.bincount(log.item[mask], minlength=log.n_items).astype(np.float64)


def _tiebreak(x: np.ndarray) -> np.ndarray:
    return x / (x.max() + 1.0) * 1e-6


def evaluate(log: Log, first_target_day: int, recent_n: int | None) -> dict:
    """Recall@K of the baselines for targets in the `TEST_DAYS` days from `first_target_day`."""
    train, targets, users = _split(log, first_target_day)
    universe = log.snapshots[first_target_day]
    hist = np.zeros((log.n_users, log.n_items), dtype=np.float32)
    hist[log.user[train], log.item[train]] = 1.0
    seen = hist[users] > 0
    n_q = len(users)

    def pop_recall(counts: np.ndarray) -> float:
        return _recall(np.broadcast_to(counts, (n_q, log.n_items)), seen, targets, universe)

    all_time = pop_recall(_counts(log, train))
    by_n = {n: pop_recall(_counts(log, train & (log.day >= first_target_day - n))) for n in RECENT_N}
    n_used = recent_n if recent_n is not None else max(by_n, key=by_n.get)
    recent = _counts(log, train & (log.day >= first_target_day - n_used))

    # Cosine item-item similarity of the binary user x item matrix; no self-similarity.
    co = hist.T @ hist
    norm = np.sqrt(np.diag(co)).astype(np.float32)
    sim = co / np.maximum(np.outer(norm, norm), 1.0)
    np.fill_diagonal(sim, 0.0)
    knn = hist[users] @ sim + _tiebreak(recent)
    return {
        "first_target_day": first_target_day,
        "users_with_targets": int(n_q),
        "users_without_history": int((~seen.any(axis=1)).sum()),
        "targets": int(sum(len(t) for t in targets)),
        "targets_in_universe": round(float(np.mean([np.isin(t, universe).mean() for t in targets])), 4),
        "recall@20": {
            "popularity_all_time": round(all_time, 4),
            "popularity_recent": round(by_n[n_used], 4),
            "item_knn": round(_recall(knn, seen, targets, universe), 4),
        },
        "recent_n_days": n_used,
        "recent_by_n": {str(n): round(r, 4) for n, r in by_n.items()},
    }


def activity_stats(log: Log) -> dict:
    per_user = np.sort(np.bincount(log.user, minlength=log.n_users))[::-1]
    per_item = np.sort(np.bincount(log.item, minlength=log.n_items))[::-1]
    top5 = per_user[: max(1, len(per_user) // 20)]
    return {
        "events": int(len(log.user)),
        "users": int(log.n_users),
        "items_touched": int((per_item > 0).sum()),
        "events_per_user": {
            "median": float(np.median(per_user)),
            "mean": round(float(per_user.mean()), 1),
            "p95": float(np.percentile(per_user, 95)),
            "max": int(per_user.max()),
            "top5pct_min": int(top5.min()),
            "top5pct_share": round(float(top5.sum() / per_user.sum()), 3),
        },
        "top1pct_items_share": round(float(per_item[: max(1, len(per_item) // 100)].sum() / per_item.sum()), 3),
    }


def run(cfg: GeneratorConfig) -> dict:
    """Generate `cfg` into a temporary lake and score the baselines on validation and test."""
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake.from_uri(f"file://{tmp}")
        t0 = time.perf_counter()
        summary = generate(lake, cfg)
        gen_s = time.perf_counter() - t0
        log = Log(lake, cfg.dates())
    test_day = cfg.days - TEST_DAYS
    validation = evaluate(log, test_day - TEST_DAYS, None)
    test = evaluate(log, test_day, validation["recent_n_days"])
    r = test["recall@20"]
    return {
        "config": cfg.to_dict(),
        "generate_seconds": round(gen_s, 2),
        "generator_totals": {k: summary.totals[k] for k in ("event_lines", "clean_events", "sessions")},
        "data": activity_stats(log),
        "validation": validation,
        "test": test,
        "recent_vs_all_time": round(r["popularity_recent"] / max(r["popularity_all_time"], 1e-9) - 1.0, 3),
    }


def _spread(runs: list[dict]) -> dict:
    """Mean, min and max over seeds of each test Recall@K and of recent vs all-time."""
    values = {k: [x["test"]["recall@20"][k] for x in runs] for k in runs[0]["test"]["recall@20"]}
    values["recent_vs_all_time"] = [x["recent_vs_all_time"] for x in runs]
    out = {k: {"mean": round(float(np.mean(v)), 4), "min": min(v), "max": max(v)} for k, v in values.items()}
    out["seeds"] = [x["config"]["seed"] for x in runs]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=21)
    p.add_argument("--start-date", default="2026-10-05")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fault-rate", type=float, default=0.01)
    p.add_argument(
        "--spread-seeds", type=int, default=0, help="also run this many further seeds: test metrics vary by seed"
    )
    p.add_argument("--out", default="bench/results/baselines_on_demo.json")
    args = p.parse_args()
    cfg = GeneratorConfig(
        start_date=date.fromisoformat(args.start_date),
        days=args.days,
        users=args.users,
        items=args.items,
        seed=args.seed,
        fault_rate=args.fault_rate,
    )
    result = {"machine": {"python": platform.python_version(), "platform": platform.platform()}, **run(cfg)}
    validation, test = result["validation"], result["test"]
    r = test["recall@20"]
    print(f"generated in {result['generate_seconds']:.1f} s: {json.dumps(result['generator_totals'])}")
    print(f"data: {json.dumps(result['data'])}")
    n_users = test["users_with_targets"]
    print(f"\nRecall@{K}, targets = a user's new items in the {TEST_DAYS} test days ({n_users} users)")
    print(f"{'baseline':<34}{'validation':>12}{'test':>10}")
    names = {
        "popularity_all_time": "popularity, all time",
        "popularity_recent": f"popularity, last {test['recent_n_days']} days",
        "item_knn": "item-kNN (cosine)",
    }
    for key, name in names.items():
        print(f"{name:<34}{validation['recall@20'][key]:>12.4f}{r[key]:>10.4f}")
    print(f"recent vs all-time popularity: {result['recent_vs_all_time']:+.0%}")
    if args.spread_seeds:
        seeds = range(args.seed + 1, args.seed + 1 + args.spread_seeds)
        runs = [result] + [run(GeneratorConfig(**{**cfg.__dict__, "seed": s})) for s in seeds]
        result["seed_spread"] = spread = _spread(runs)
        print(f"\ntest Recall@{K} over seeds {spread['seeds']}: mean [min, max]")
        for key, name in {**names, "popularity_recent": "popularity, recent (N by validation)"}.items():
            v = spread[key]
            print(f"{name:<38}{v['mean']:>8.4f}  [{v['min']:.4f}, {v['max']:.4f}]")
        v = spread["recent_vs_all_time"]
        print(f"{'recent vs all-time popularity':<38}{v['mean']:>+8.0%}  [{v['min']:+.0%}, {v['max']:+.0%}]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
