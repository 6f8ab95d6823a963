"""Sessionization throughput: Spark (`recsys_dagster.spark.sessionize`) beside DuckDB.

Both engines run the same rule (dedupe by event id, 30-minute gap with exactly-at-gap
kept, sessions of day D are those with `end_ts + gap` in [D, D+1)) over the same Parquet
file of events of D-1 and D, and write their sessions to Parquet. Timed: transform + write
(data generation and JVM start are not). The outputs must agree: same session count and
the same set of session ids.

    .venv/bin/python bench/sessionize.py --sizes 1000000,10000000 --out bench/results/sessionize.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_dagster.contract import DEVICE_TYPES, EVENT_TYPES, EVENT_WEIGHTS  # noqa: E402

DAY = "2026-10-06"
GAP_MINUTES = 30
_EVENT_TYPE_P = (0.70, 0.20, 0.05, 0.04, 0.01)


def _day_start_us(day: str) -> int:
    d = date.fromisoformat(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000


def _prefixed(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(ids).cast(pa.string()), "")


def generate_events(n: int, path: Path, seed: int = 7) -> None:
    """`n` events of DAY-1 and DAY as client sessions of Zipf-ish users, shuffled (arrival
    order is not time order), plus 0.1% re-sent duplicates of earlier events."""
    rng = np.random.default_rng(seed)
    n_users = max(1_000, n // 25)
    n_items = max(1_000, n // 50)
    lengths = np.minimum(rng.geometric(1 / 8, size=n // 4 + 16), 60)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    lengths[-1] -= int(lengths.sum() - n)
    lengths = lengths[lengths > 0]
    n_sessions = len(lengths)
    # Zipf-ish, p(rank) ~ 1/(rank + c): a heavy head without one user owning the whole day.
    c = n_users / 100
    users = np.minimum((c * ((n_users + c) / c) ** rng.random(n_sessions) - c).astype(np.int64), n_users - 1)
    lo = _day_start_us(DAY) - 86_400_000_000
    hi = lo + 2 * 86_400_000_000
    starts = rng.integers(lo, hi - 3_600_000_000, n_sessions)
    session_of = np.repeat(np.arange(n_sessions), lengths)
    gaps = np.minimum(rng.exponential(60e6, n), 1_800e6).astype(np.int64)  # a few gaps hit the limit
    first = np.zeros(n, dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    gaps[first] = 0
    csum = np.cumsum(gaps)
    offsets = csum - np.repeat(csum[first], lengths)
    ts = np.minimum(starts[session_of] + offsets, hi - 1)

    n_dup = n // 1000
    order = rng.permutation(n)
    rows = np.concatenate([order, rng.choice(n, n_dup, replace=False)])
    event_types = pa.DictionaryArray.from_arrays(
        pa.array(rng.choice(len(EVENT_TYPES), n, p=_EVENT_TYPE_P).astype(np.int8)), pa.array(EVENT_TYPES)
    )
    devices = pa.DictionaryArray.from_arrays(
        pa.array(rng.choice(len(DEVICE_TYPES), n_sessions).astype(np.int8)[session_of]), pa.array(DEVICE_TYPES)
    )
    items = (rng.zipf(1.2, n) - 1) % n_items
    take = pa.array(rows)
    table = pa.table(
        {
            "event_id": _prefixed("e", np.arange(n)).take(take),
            "user_id": _prefixed("u", users[session_of]).take(take),
            "session_id": pa.nulls(len(rows), pa.string()),
            "item_id": _prefixed("i", items).take(take),
            "event_type": event_types.take(take).cast(pa.string()),
            "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")).take(take),
            "device_type": devices.take(take).cast(pa.string()),
        }
    )
    pq.write_table(table, path, compression="zstd", row_group_size=1_000_000)


def _duckdb_sql(src: Path, dst: Path) -> str:
    day_start = _day_start_us(DAY)
    hi = day_start + 86_400_000_000
    gap = GAP_MINUTES * 60 * 1_000_000
    weight_case = " ".join(f"WHEN '{k}' THEN {float(v)}" for k, v in EVENT_WEIGHTS.items())
    order = "ORDER BY ts_us, event_id"
    return f"""
    COPY (
      WITH dedup AS (
        SELECT DISTINCT ON (event_id) event_id, user_id, item_id, event_type, device_type,
               epoch_us("timestamp") AS ts_us, CASE event_type {weight_case} END AS weight
        FROM read_parquet('{src}') ORDER BY event_id, ts_us
      ), flagged AS (
        SELECT *, CASE WHEN lag(ts_us) OVER w IS NULL OR ts_us - lag(ts_us) OVER w > {gap}
                       THEN 1 ELSE 0 END AS is_new
        FROM dedup WINDOW w AS (PARTITION BY user_id {order})
      ), numbered AS (
        SELECT *, sum(is_new) OVER (PARTITION BY user_id {order} ROWS UNBOUNDED PRECEDING) AS sidx
        FROM flagged
      ), grouped AS (
        SELECT user_id, min(ts_us) AS start_us, max(ts_us) AS end_us,
               list(item_id {order}) AS item_ids, list(event_type {order}) AS event_types,
               list(event_id {order}) AS event_ids, list(make_timestamp(ts_us) {order}) AS timestamps,
               list(weight {order}) AS event_weights, first(device_type {order}) AS device_type,
               count(*) AS n_events, count(DISTINCT item_id) AS n_items
        FROM numbered GROUP BY user_id, sidx
      )
      SELECT substr(sha1(user_id || '|' || start_us::VARCHAR || '|' || event_ids[1]), 1, 16) AS session_id,
             user_id, make_timestamp(start_us) AS start_ts, make_timestamp(end_us) AS end_ts,
             (end_us - start_us) / 1e6 AS duration_s, item_ids, event_types, event_ids, timestamps,
             event_weights, device_type, n_events, n_items, '{DAY}' AS dt
      FROM grouped
      WHERE end_us + {gap} >= {day_start} AND end_us + {gap} < {hi}
    ) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)
    """


def run_duckdb(src: Path, dst: Path) -> float:
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(_duckdb_sql(src, dst))
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed


def run_spark(spark, src: Path, work: Path) -> float:
    from recsys_dagster.lake import Lake
    from recsys_dagster.spark.io import write_lake_parquet
    from recsys_dagster.spark.sessionize import sessionize

    lake = Lake.from_uri(f"file://{work / 'lake'}")
    t0 = time.perf_counter()
    sessions = sessionize(spark.read.parquet(str(src)), DAY, GAP_MINUTES)
    write_lake_parquet(sessions, lake, f"sessions/dt={DAY}", work / "staging")
    return time.perf_counter() - t0


def _session_ids(path: Path) -> pa.Array:
    return pq.read_table(path, columns=["session_id"]).column("session_id").combine_chunks()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--out", default="bench/results/sessionize.json")
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir, removed)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    import duckdb
    import pyspark

    from recsys_dagster.spark.session import get_spark

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-sessionize-"))
    work.mkdir(parents=True, exist_ok=True)
    spark = get_spark(master="local[*]", app_name="bench-sessionize", driver_memory=args.driver_memory)
    results: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "spark": pyspark.__version__,
            "duckdb": duckdb.__version__,
            "spark_master": "local[*]",
            "spark_driver_memory": args.driver_memory,
        },
        "day": DAY,
        "gap_minutes": GAP_MINUTES,
        "timed": "transform + write of the sessions Parquet (Spark via write_lake_parquet to a local lake)",
        "sizes": [],
    }
    try:
        # Warm-up: JVM class loading and codegen are a fixed cost, not throughput.
        warm = work / "warm.parquet"
        generate_events(20_000, warm)
        run_spark(spark, warm, work / "warm")
        for n in sizes:
            src = work / f"events-{n}.parquet"
            t0 = time.perf_counter()
            generate_events(n, src)
            gen_s = time.perf_counter() - t0
            rows = pq.ParquetFile(src).metadata.num_rows
            load_before = os.getloadavg()[0]  # the box is shared: record how busy it was
            spark_s = run_spark(spark, src, work / f"spark-{n}")
            duck_out = work / f"duckdb-{n}.parquet"
            duck_s = run_duckdb(src, duck_out)
            spark_ids = _session_ids(work / f"spark-{n}" / "lake" / "sessions" / f"dt={DAY}")
            duck_ids = _session_ids(duck_out)
            same = (
                len(spark_ids) == len(duck_ids)
                and pc.all(
                    pc.equal(spark_ids.take(pc.sort_indices(spark_ids)), duck_ids.take(pc.sort_indices(duck_ids)))
                ).as_py()
            )
            if not same:
                raise SystemExit(f"engines disagree at n={n}: spark {len(spark_ids)} sessions, duckdb {len(duck_ids)}")
            entry = {
                "rows": rows,
                "generate_seconds": round(gen_s, 2),
                "spark_seconds": round(spark_s, 3),
                "spark_events_per_s": round(rows / spark_s),
                "duckdb_seconds": round(duck_s, 3),
                "duckdb_events_per_s": round(rows / duck_s),
                "sessions": {"spark": len(spark_ids), "duckdb": len(duck_ids)},
                "session_ids_equal": True,
                "load_avg_1m_before": round(load_before, 2),
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
            }
            results["sizes"].append(entry)
            print(json.dumps(entry), flush=True)
            shutil.rmtree(work / f"spark-{n}", ignore_errors=True)
            for p in (src, duck_out):
                p.unlink(missing_ok=True)
    finally:
        spark.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'rows':>12} {'spark s':>9} {'spark ev/s':>12} {'duckdb s':>9} {'duckdb ev/s':>12} {'sessions':>10}")
    for e in results["sizes"]:
        print(
            f"{e['rows']:>12,} {e['spark_seconds']:>9.2f} {e['spark_events_per_s']:>12,} "
            f"{e['duckdb_seconds']:>9.2f} {e['duckdb_events_per_s']:>12,} {e['sessions']['spark']:>10,}"
        )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
