"""Exact (sample-free) checks on training examples; the lead wraps them as asset checks.

Each returns a CheckOutcome whose metadata holds only numbers and short strings, so it can
go straight into Dagster metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_dagster.spark.training import NEGATIVE_KINDS, SPLITS, ExampleConfig, ExampleCounts, negative_quota

DEFAULT_MIX_TOLERANCE = 0.1


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_no_leakage(train: DataFrame, validation: DataFrame, test: DataFrame) -> CheckOutcome:
    """Splits are ordered in time (max train ts < min validation ts <= max validation ts
    < min test ts), and every history item of a row is a positive of the same user at a
    strictly earlier time (checked against the union of the three splits, with joins)."""
    frames = {"train": train, "validation": validation, "test": test}
    rows = None
    for name, df in frames.items():
        part = df.select("user_id", "item_id", "timestamp", "history", F.lit(name).alias("_split"))
        rows = part if rows is None else rows.unionByName(part)
    assert rows is not None
    stats = {
        r["_split"]: r
        for r in rows.groupBy("_split")
        .agg(F.count(F.lit(1)).alias("n"), F.min("timestamp").alias("lo"), F.max("timestamp").alias("hi"))
        .collect()
    }
    n = {s: int(stats[s]["n"]) if s in stats else 0 for s in SPLITS}

    # A row is out of order when a later split has a timestamp at or before its own.
    def later_min(split: str) -> Any:
        later = [stats[s]["lo"] for s in SPLITS[SPLITS.index(split) + 1 :] if s in stats]
        return min(later) if later else None

    out_of_order = 0
    for s in ("train", "validation"):
        bound = later_min(s)
        if bound is not None and s in stats:
            out_of_order += frames[s].filter(F.col("timestamp") >= F.lit(bound)).count()

    first_seen = rows.groupBy("user_id", "item_id").agg(F.min("timestamp").alias("_first"))
    hist = rows.withColumn("_row", F.monotonically_increasing_id()).select(
        "_row", "user_id", "timestamp", F.explode("history").alias("item_id")
    )
    judged = hist.join(first_seen, ["user_id", "item_id"], "left").withColumn(
        "_bad", F.col("_first").isNull() | (F.col("_first") >= F.col("timestamp"))
    )
    h = judged.agg(
        F.count(F.lit(1)).alias("checked"),
        F.sum(F.col("_bad").cast("long")).alias("bad"),
        F.countDistinct(F.when(F.col("_bad"), F.col("_row"))).alias("bad_rows"),
    ).first()
    bad_items, bad_rows = int(h["bad"] or 0), int(h["bad_rows"] or 0)
    passed = out_of_order == 0 and bad_items == 0
    desc = (
        "no leakage: splits ordered in time and every history item precedes its row"
        if passed
        else f"leakage: {out_of_order} rows not before the later splits, {bad_items} history items "
        f"in {bad_rows} rows not seen strictly earlier for the user"
    )
    meta = {f"rows_{s}": n[s] for s in SPLITS}
    meta.update(
        rows_out_of_time_order=out_of_order,
        history_items_checked=int(h["checked"] or 0),
        history_items_not_earlier=bad_items,
        rows_with_future_history=bad_rows,
    )
    return CheckOutcome(passed, desc, meta)


def check_negatives_disjoint(examples: DataFrame, positives_by_user: DataFrame | None = None) -> CheckOutcome:
    """No negative is the row's positive, nor any positive of the user in the window.

    `positives_by_user` (user_id, item_id): the user's positives across the whole window;
    by default those of `examples` itself (pass the union of all splits for the full check).
    """
    pos = (positives_by_user if positives_by_user is not None else examples).select("user_id", "item_id").distinct()
    negs = examples.select("user_id", "item_id", F.explode("negatives").alias("neg"))
    counts = negs.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("neg") == F.col("item_id")).cast("long")).alias("self"),
        F.sum(F.col("neg").isNull().cast("long")).alias("nulls"),
    ).first()
    user_hits = negs.join(pos.withColumnRenamed("item_id", "neg"), ["user_id", "neg"], "left_semi").count()
    n_self, n_null = int(counts["self"] or 0), int(counts["nulls"] or 0)
    passed = n_self == 0 and user_hits == 0 and n_null == 0
    desc = (
        "negatives are disjoint from the users' positives"
        if passed
        else f"{user_hits} negatives are positives of their user, {n_self} equal the row's positive, {n_null} are null"
    )
    return CheckOutcome(
        passed,
        desc,
        {
            "negatives_checked": int(counts["n"] or 0),
            "negatives_user_positive": user_hits,
            "negatives_equal_positive": n_self,
            "negatives_null": n_null,
        },
    )


def check_counts(counts: ExampleCounts, cfg: ExampleConfig, tolerance: float = DEFAULT_MIX_TOLERANCE) -> CheckOutcome:
    """No split empty, K negatives on every row, and each kind's share within `tolerance`
    of its quota (cfg.mix rounded to whole negatives per row; popular and hard draws that
    fall short are topped up with uniform ones, which moves the mix).
    """
    rows = {s: int(counts.counts.get(s, 0)) for s in SPLITS}
    empty = [s for s in SPLITS if rows[s] == 0]
    wrong_k = counts.bad_negative_rows
    kinds = {k: int(counts.negative_mix.get(k, 0)) for k in NEGATIVE_KINDS}
    total = sum(kinds.values())
    expected_total = sum(rows.values()) * cfg.negatives
    quota = negative_quota(cfg)
    share = {k: (kinds[k] / total if total else 0.0) for k in NEGATIVE_KINDS}
    off = {k: abs(share[k] - quota[k] / cfg.negatives) for k in NEGATIVE_KINDS}
    bad_mix = [k for k in NEGATIVE_KINDS if off[k] > tolerance]
    problems = []
    if empty:
        problems.append(f"empty split(s): {', '.join(empty)}")
    if wrong_k or total != expected_total:
        problems.append(
            f"{wrong_k} rows without exactly {cfg.negatives} negatives "
            f"({total} negatives for {expected_total} expected)"
        )
    if bad_mix:
        problems.append(
            "negative mix off: " + ", ".join(f"{k} {share[k]:.3f} vs {quota[k] / cfg.negatives:.3f}" for k in bad_mix)
        )
    meta: dict[str, Any] = {f"rows_{s}": rows[s] for s in SPLITS}
    meta.update({f"share_{k}": round(share[k], 4) for k in NEGATIVE_KINDS})
    meta.update(bad_negative_rows=wrong_k, negatives_total=total, negatives_expected=expected_total)
    return CheckOutcome(
        not problems, "; ".join(problems) or "splits non-empty, K negatives per row, mix within tolerance", meta
    )
