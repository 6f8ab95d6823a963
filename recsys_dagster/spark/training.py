"""Training examples of a weekly partition (CONTRACTS.md "training"), in PySpark.

One row per positive (a session's strongest event on an item), with the user's history
strictly before it, K sampled negatives (popular / uniform / hard) and a time split.
Negatives are drawn from hashes of (seed, row, draw number), so the output does not depend
on partitioning: the same input and seed give the same examples on any cluster.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_dagster.contract import CATALOG, SESSIONS, TRAINING, day_prefix, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.spark.examples import ExampleConfig, ExampleCounts, ExamplesSummary

NEGATIVE_KINDS: tuple[str, ...] = ("popular", "uniform", "hard")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
OUTPUTS: tuple[str, ...] = ("train", "validation", "test", "items", "user_histories", "user_seen")
EXAMPLE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "session_id",
    "item_id",
    "weight",
    "event_type",
    "timestamp",
    "device_type",
    "hour",
    "history",
    "negatives",
    "negative_kinds",
    "split",
)
REQUIRED_SESSION_COLUMNS: tuple[str, ...] = (
    "session_id",
    "user_id",
    "device_type",
    "item_ids",
    "event_types",
    "timestamps",
    "event_weights",
)
RECENT_DAYS = 7  # recent_count looks at the last week of the train split
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_MASK53 = (1 << 53) - 1
# Priority when the same item is drawn for two kinds: keep it where it was drawn first.
_KIND_RANK = {"popular": 0, "hard": 1, "uniform": 2}


class TrainingDataError(ValueError):
    """The window's data cannot give valid training examples (missing days, bad sessions)."""


# --- calendar -------------------------------------------------------------------------


def split_ranges(week_end: date, cfg: ExampleConfig) -> dict[str, tuple[date, date]]:
    """Inclusive (first, last) day of each split for the window ending on `week_end`."""
    test_start = week_end - timedelta(days=cfg.test_days - 1)
    val_start = test_start - timedelta(days=cfg.validation_days)
    window_start = week_end - timedelta(days=cfg.window_days - 1)
    return {
        "train": (window_start, val_start - timedelta(days=1)),
        "validation": (val_start, test_start - timedelta(days=1)),
        "test": (test_start, week_end),
    }


def split_for(day: date, week_end: date, cfg: ExampleConfig) -> str:
    """Split of a positive dated `day`. Days before the window count as train: a session
    that closes on the window's first day may have started the day before."""
    if day > week_end:
        raise ValueError(f"{day} is after the window's end {week_end}")
    ranges = split_ranges(week_end, cfg)
    if day >= ranges["test"][0]:
        return "test"
    if day >= ranges["validation"][0]:
        return "validation"
    return "train"


def window_dates(week_end: date, cfg: ExampleConfig) -> list[date]:
    return [week_end - timedelta(days=i) for i in range(cfg.window_days - 1, -1, -1)]


def negative_quota(cfg: ExampleConfig) -> dict[str, int]:
    """K split over the kinds by `mix` (largest remainder; ties go to the earlier kind)."""
    raw = [m * cfg.negatives for m in cfg.mix]
    quota = [int(np.floor(r + 1e-9)) for r in raw]
    order = sorted(range(3), key=lambda i: (-(raw[i] - quota[i]), i))
    for i in order[: cfg.negatives - sum(quota)]:
        quota[i] += 1
    return dict(zip(NEGATIVE_KINDS, quota))


# --- positives and histories ----------------------------------------------------------


def _day_col(ts_us: Column) -> Column:
    # Computed from epoch micros so the date is UTC whatever the session time zone is.
    return F.date_add(F.lit(date(1970, 1, 1)), F.floor(ts_us / _DAY_US).cast("int"))


def _check_sessions(sessions: DataFrame, week_end: date) -> None:
    missing = [c for c in REQUIRED_SESSION_COLUMNS if c not in sessions.columns]
    if missing:
        raise TrainingDataError(f"sessions lack columns {missing}")
    end_us = int(datetime(week_end.year, week_end.month, week_end.day, tzinfo=UTC).timestamp()) * 1_000_000 + _DAY_US
    n = F.size("item_ids")
    row = sessions.agg(
        F.sum(
            ((F.size("event_types") != n) | (F.size("timestamps") != n) | (F.size("event_weights") != n)).cast("long")
        ).alias("ragged"),
        F.sum(
            (F.exists("item_ids", lambda x: x.isNull()) | F.exists("timestamps", lambda x: x.isNull())).cast("long")
        ).alias("nulls"),
        F.sum((F.col("user_id").isNull() | F.col("session_id").isNull()).cast("long")).alias("null_keys"),
        F.sum((F.unix_micros(F.array_max("timestamps")) >= end_us).cast("long")).alias("late"),
    ).first()
    problems = {k: int(row[k] or 0) for k in ("ragged", "nulls", "null_keys", "late")}
    if any(problems.values()):
        raise TrainingDataError(
            "sessions break the contract: "
            f"{problems['ragged']} with list columns of different lengths, "
            f"{problems['nulls']} with null items/timestamps, {problems['null_keys']} with null user/session id, "
            f"{problems['late']} with events after the window end {week_end}"
        )


def explode_positives(sessions: DataFrame, week_end: date, cfg: ExampleConfig) -> DataFrame:
    """One row per (session, item): its strongest event, the first one among equals.

    The weight comes from `cfg.weights` by event type; a type the config does not name
    keeps the weight the session recorded for it.
    """
    ranges = split_ranges(week_end, cfg)
    weight_map = F.create_map(*[x for k, v in cfg.weights.items() for x in (F.lit(k), F.lit(float(v)))])
    ev = sessions.select(
        "session_id",
        "user_id",
        "device_type",
        "event_types",
        "timestamps",
        "event_weights",
        F.posexplode("item_ids").alias("pos", "item_id"),
    )
    idx = F.col("pos") + 1
    ev = ev.select(
        "session_id",
        "user_id",
        "device_type",
        "item_id",
        "pos",
        F.element_at("event_types", idx).alias("event_type"),
        F.element_at("timestamps", idx).alias("timestamp"),
        F.coalesce(
            F.element_at(weight_map, F.element_at("event_types", idx)),
            F.element_at("event_weights", idx).cast("double"),
        ).alias("weight"),
    )
    strongest = Window.partitionBy("session_id", "item_id").orderBy(F.desc("weight"), "timestamp", "pos")
    pos = ev.withColumn("_rank", F.row_number().over(strongest)).filter("_rank = 1").drop("_rank", "pos")
    ts_us = F.unix_micros("timestamp")
    day = _day_col(ts_us)
    return pos.select(
        "user_id",
        "session_id",
        "item_id",
        "weight",
        "event_type",
        "timestamp",
        "device_type",
        F.floor(F.pmod(ts_us, F.lit(_DAY_US)) / _HOUR_US).cast("int").alias("hour"),
        ts_us.alias("ts_us"),
        day.alias("day"),
        F.when(day >= F.lit(ranges["test"][0]), "test")
        .when(day >= F.lit(ranges["validation"][0]), "validation")
        .otherwise("train")
        .alias("split"),
    )


def _last_distinct(items: Column, n: int) -> Column:
    """Last n distinct entries of an oldest-first list, oldest first."""
    return F.reverse(F.slice(F.array_distinct(F.reverse(items)), 1, n))


def histories_before(positives: DataFrame, history_len: int) -> DataFrame:
    """(user_id, ts_us, history): the user's last distinct items strictly before ts_us.

    Positives at the same instant are grouped into one row first, so a frame ending at the
    previous row never lets two same-time events see each other; items at one instant are
    ordered by id to keep the output deterministic.
    """
    at = positives.groupBy("user_id", "ts_us").agg(F.array_sort(F.collect_set("item_id")).alias("_items"))
    before = Window.partitionBy("user_id").orderBy("ts_us").rowsBetween(Window.unboundedPreceding, -1)
    return at.select(
        "user_id",
        "ts_us",
        _last_distinct(F.flatten(F.collect_list("_items").over(before)), history_len).alias("history"),
    )


def user_histories(positives: DataFrame, history_len: int) -> DataFrame:
    """(user_id, history): the last distinct items of each user at the window end."""
    ordered = F.array_sort(F.collect_list(F.struct("ts_us", "item_id")))
    return positives.groupBy("user_id").agg(
        _last_distinct(F.transform(ordered, lambda s: s["item_id"]), history_len).alias("history")
    )


def user_seen(positives: DataFrame, seen_limit: int) -> DataFrame:
    """(user_id, seen): the distinct items of each user in the window, most recent first
    (by the item's latest positive; ties by item id, descending), at most `seen_limit`.
    Serving excludes these from a known user's recommendations."""
    last = positives.groupBy("user_id", "item_id").agg(F.max("ts_us").alias("ts_us"))
    recent_first = Window.partitionBy("user_id").orderBy(F.desc("ts_us"), F.desc("item_id"))
    kept = last.withColumn("_r", F.row_number().over(recent_first)).filter(F.col("_r") <= seen_limit)
    ordered = F.array_sort(F.collect_list(F.struct("_r", "item_id")))
    return kept.groupBy("user_id").agg(F.transform(ordered, lambda s: s["item_id"]).alias("seen"))


# --- items -----------------------------------------------------------------------------


def items_table(catalog: DataFrame, positives: DataFrame, week_end: date, cfg: ExampleConfig) -> DataFrame:
    """Latest catalog row per item across the snapshots, plus items seen only in events."""
    for col in ("item_id", "category_path", "dt"):
        if col not in catalog.columns:
            raise TrainingDataError(f"catalog lacks column {col!r}")
    tiebreak = F.xxhash64(*[F.col(c).cast("string") for c in catalog.columns])
    latest = Window.partitionBy("item_id").orderBy(F.desc("dt"), tiebreak)
    last_dt = catalog.agg(F.max("dt").alias("_last_dt"))
    snaps = catalog.groupBy("item_id").agg(F.min("dt").alias("_first_dt"), F.max("dt").alias("_max_dt"))
    rows = (
        catalog.withColumn("_r", F.row_number().over(latest))
        .filter("_r = 1")
        .drop("_r")
        .join(snaps, "item_id")
        .crossJoin(last_dt)
        .withColumn("active", F.col("_max_dt") == F.col("_last_dt"))
    )
    recent_from = split_ranges(week_end, cfg)["validation"][0] - timedelta(days=RECENT_DAYS)
    is_train = F.col("split") == "train"
    stats = positives.groupBy("item_id").agg(
        F.sum(is_train.cast("long")).alias("train_count"),
        F.sum(F.when(is_train & (F.col("day") >= F.lit(recent_from)), F.col("weight")).otherwise(0.0)).alias(
            "recent_count"
        ),
        F.min("timestamp").alias("_first_event"),
    )
    first_snapshot = F.timestamp_micros(F.unix_date(F.to_date("_first_dt")).cast("long") * _DAY_US)
    out = rows.join(stats, "item_id", "full_outer")
    return out.select(
        *[c for c in catalog.columns],
        F.coalesce("active", F.lit(False)).alias("active"),
        F.coalesce("train_count", F.lit(0)).cast("long").alias("train_count"),
        F.coalesce("recent_count", F.lit(0.0)).cast("double").alias("recent_count"),
        F.least(first_snapshot, F.col("_first_event")).alias("first_seen"),
    )


# --- negatives -------------------------------------------------------------------------


def _unit(*cols: Column) -> Column:
    """A uniform number in [0, 1) from a hash of the columns (53 bits, like a double)."""
    return F.xxhash64(*cols).bitwiseAND(F.lit(_MASK53)).cast("double") / float(1 << 53)


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: (prob, alias) so that slot i keeps i with prob[i], else alias[i]."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if n == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("alias table needs finite non-negative weights with a positive sum")
    p = w * n / w.sum()
    prob = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if p[i] < 1.0]
    large = [i for i in range(n) if p[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = p[s], g
        p[g] = p[g] + p[s] - 1.0
        (small if p[g] < 1.0 else large).append(g)
    return prob, alias  # leftovers keep prob 1 (float rounding)


def _extra(q: int) -> int:
    # Oversampling per kind: rejected or duplicate draws are rare; a top-up covers the rest.
    return q + q // 2 + 2 if q > 0 else 0


def _draws(rows: DataFrame, n: int, kind: str, salt: str, seed: int) -> DataFrame:
    d = rows.withColumn("j", F.explode(F.sequence(F.lit(0), F.lit(n - 1))))
    return (
        d.withColumn("u1", _unit(F.lit(seed), F.lit(salt), F.col("key"), F.col("j"), F.lit(1)))
        .withColumn("u2", _unit(F.lit(seed), F.lit(salt), F.col("key"), F.col("j"), F.lit(2)))
        .withColumn("kind", F.lit(kind))
    )


def _pick(candidates: DataFrame, user_pos: DataFrame) -> DataFrame:
    """Valid candidates: not the positive, not a positive of the user, first draw of each item."""
    valid = candidates.filter(F.col("cand") != F.col("item_id")).join(
        user_pos, (candidates["user_id"] == user_pos["_u"]) & (candidates["cand"] == user_pos["_i"]), "left_anti"
    )
    first = Window.partitionBy("key", "cand").orderBy("rank", "j")
    return valid.withColumn("_r", F.row_number().over(first)).filter("_r = 1").drop("_r")


def _top_up(result: DataFrame, candidates: DataFrame, k: int) -> DataFrame:
    """Append `candidates` (key, cand, j; already valid) to rows with fewer than k negatives."""
    fresh = candidates.join(result.select("key", "negatives"), "key").filter(
        ~F.array_contains("negatives", F.col("cand"))
    )
    first = Window.partitionBy("key", "cand").orderBy("j")
    fresh = fresh.withColumn("_r", F.row_number().over(first)).filter("_r = 1")
    extra = fresh.groupBy("key").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("j", "cand"))), lambda s: s["cand"]).alias("_more")
    )
    joined = result.join(extra, "key", "left")
    more = F.slice(
        F.coalesce("_more", F.array().cast("array<string>")), 1, F.greatest(F.lit(0), k - F.size("negatives"))
    )
    return joined.select(
        *[c for c in result.columns if c not in ("negatives", "negative_kinds")],
        F.concat("negatives", more).alias("negatives"),
        F.concat("negative_kinds", F.transform(more, lambda _: F.lit("uniform"))).alias("negative_kinds"),
    )


def sample_negatives(positives: DataFrame, items: DataFrame, cfg: ExampleConfig) -> DataFrame:
    """(user_id, session_id, item_id, negatives, negative_kinds), K per positive.

    The item tables (popularity alias table, active items, leaves) are collected to the
    driver and joined back as small DataFrames; examples never leave the executors.
    A kind that cannot fill its quota (small leaf, unknown leaf, no train counts, draws
    rejected) is topped up from the uniform pool, labelled `uniform`; rows still short get
    the remaining active items in hash order. A row left with fewer than K (the user's
    positives cover the catalog) raises nothing here: `check_counts` reports it and
    `training_partition` refuses to write it.
    """
    spark = positives.sparkSession
    quota = negative_quota(cfg)
    k = cfg.negatives
    act = (
        items.filter("active")
        .select("item_id", "train_count", "category_path")
        .toPandas()
        .sort_values("item_id", kind="stable")
        .reset_index(drop=True)
    )
    if act.empty:
        raise TrainingDataError(
            "no active items in the window's last catalog snapshot: nothing to sample negatives from"
        )
    act["slot"] = np.arange(len(act), dtype=np.int64)
    uniform_df = spark.createDataFrame(
        act[["slot", "item_id"]].rename(columns={"item_id": "cand"}), "slot long, cand string"
    )
    n_act = len(act)

    pop_w = act["train_count"].to_numpy(dtype=np.float64) ** cfg.popularity_alpha
    pop_w[act["train_count"].to_numpy() <= 0] = 0.0
    alias_df = None
    if pop_w.sum() > 0:
        prob, alias = alias_table(pop_w)
        ids = act["item_id"].to_numpy()
        alias_df = spark.createDataFrame(
            pd.DataFrame({"slot": act["slot"], "prob": prob, "cand_a": ids, "cand_b": ids[alias]}),
            "slot long, prob double, cand_a string, cand_b string",
        )
    leaves = act.dropna(subset=["category_path"]).copy()
    leaves["leaf_pos"] = leaves.groupby("category_path").cumcount().astype(np.int64)
    # Explicit schemas: an empty table (no leaf known) cannot have its types inferred.
    leaf_df = spark.createDataFrame(
        leaves[["category_path", "leaf_pos", "item_id"]].rename(columns={"item_id": "cand"}),
        "category_path string, leaf_pos long, cand string",
    )
    leaf_size = spark.createDataFrame(
        leaves.groupby("category_path").size().rename("leaf_size").reset_index().astype({"leaf_size": np.int64}),
        "category_path string, leaf_size long",
    )

    key = F.concat_ws("\u0001", "session_id", "item_id")
    rows = positives.select("user_id", "session_id", "item_id", key.alias("key"))
    user_pos = positives.select(F.col("user_id").alias("_u"), F.col("item_id").alias("_i")).distinct()
    parts: list[DataFrame] = []
    cols = ["key", "user_id", "item_id", "cand", "kind", "j"]
    if quota["popular"] and alias_df is not None:
        d = _draws(rows, _extra(quota["popular"]), "popular", "popular", cfg.seed)
        d = d.withColumn("slot", F.floor(F.col("u1") * n_act).cast("long")).join(alias_df, "slot")
        parts.append(
            d.withColumn(
                "cand", F.when(F.col("u2") < F.col("prob"), F.col("cand_a")).otherwise(F.col("cand_b"))
            ).select(cols)
        )
    if quota["hard"]:
        leafy = rows.join(items.select("item_id", "category_path"), "item_id").join(leaf_size, "category_path")
        d = _draws(leafy, _extra(quota["hard"]), "hard", "hard", cfg.seed)
        d = d.withColumn("leaf_pos", F.floor(F.col("u1") * F.col("leaf_size")).cast("long"))
        parts.append(d.join(leaf_df, ["category_path", "leaf_pos"]).select(cols))
    # One uniform pool serves the uniform quota and tops up the kinds that fell short.
    n_uniform = _extra(quota["uniform"] + quota["hard"] + quota["popular"] // 2) + k // 2
    d = _draws(rows, n_uniform, "uniform", "uniform", cfg.seed)
    d = d.withColumn("slot", F.floor(F.col("u1") * n_act).cast("long")).join(uniform_df, "slot")
    parts.append(d.select(cols))

    cands = parts[0]
    for p in parts[1:]:
        cands = cands.unionByName(p)
    rank = F.create_map(*[x for kind, r in _KIND_RANK.items() for x in (F.lit(kind), F.lit(r))])
    picked = _pick(cands.withColumn("rank", F.element_at(rank, F.col("kind"))), user_pos)
    per_row = picked.groupBy("key").agg(F.array_sort(F.collect_list(F.struct("rank", "j", "cand", "kind"))).alias("_c"))

    def of(kind: str, n: Column | int) -> Column:
        return F.slice(F.filter("_c", lambda s: s["kind"] == kind), 1, n)

    pop, hard = of("popular", quota["popular"]), of("hard", quota["hard"])
    chosen = F.concat(pop, hard, of("uniform", F.lit(k) - F.size(pop) - F.size(hard)))
    empty = F.array().cast("array<string>")
    # Materialised once: the short-row test below and the caller would otherwise each
    # recompute the whole draw-and-join plan.
    result = (
        rows.join(per_row, "key", "left")
        .select(
            "key",
            "user_id",
            "session_id",
            "item_id",
            F.coalesce(F.transform(chosen, lambda s: s["cand"]), empty).alias("negatives"),
            F.coalesce(F.transform(chosen, lambda s: s["kind"]), empty).alias("negative_kinds"),
        )
        .localCheckpoint()
    )
    short = result.filter(F.size("negatives") < k).select("key", "user_id", "item_id")
    if short.limit(1).count():
        # Every remaining active item, in hash order: exact, so a row stays short only if
        # the user's positives leave fewer than K active items. Rare (tiny catalogs, very
        # active users), hence the cross join only over the short rows.
        every = short.crossJoin(uniform_df.select("cand")).withColumn(
            "j", F.xxhash64(F.lit(cfg.seed), F.col("key"), F.col("cand"))
        )
        every = _pick(every.withColumn("rank", F.lit(2)), user_pos).select("key", "cand", "j")
        result = _top_up(result, every, k)
    return result.drop("key")


# --- assembly --------------------------------------------------------------------------


@dataclass
class _Built:
    examples: DataFrame  # all splits, with `split`
    items: DataFrame
    user_histories: DataFrame
    user_seen: DataFrame


def _build(sessions: DataFrame, items: DataFrame, week_end: date, cfg: ExampleConfig) -> _Built:
    _check_sessions(sessions, week_end)
    # Checkpointed: every later stage reads positives and items, and lineage through the
    # explode and window would otherwise be recomputed by each of them.
    positives = explode_positives(sessions, week_end, cfg).localCheckpoint()
    item_table = items_table(items, positives, week_end, cfg).localCheckpoint()
    hist = histories_before(positives, cfg.history_len)
    negs = sample_negatives(positives, item_table, cfg)
    examples = (
        positives.join(hist, ["user_id", "ts_us"])
        .join(negs, ["user_id", "session_id", "item_id"], "left")
        .select(*EXAMPLE_COLUMNS)
        .localCheckpoint()  # the splits, counts and writes all read it
    )
    return _Built(
        examples, item_table, user_histories(positives, cfg.history_len), user_seen(positives, cfg.seen_limit)
    )


def build_examples(sessions: DataFrame, items: DataFrame, week_end: date, cfg: ExampleConfig) -> dict[str, DataFrame]:
    """{"train", "validation", "test", "items", "user_histories", "user_seen"} for the window ending on
    `week_end` (a Sunday). `sessions`: the window's sessions; `items`: the window's catalog
    snapshots, one row per (snapshot `dt`, item). Runs a few Spark jobs (an input check and
    local checkpoints of positives, items and negatives); the returned frames are lazy."""
    built = _build(sessions, items, week_end, cfg)
    out = {s: built.examples.filter(F.col("split") == s) for s in SPLITS}
    out["items"] = built.items
    out["user_histories"] = built.user_histories
    out["user_seen"] = built.user_seen
    return out


def _parse_week(week: str) -> date:
    try:
        monday = date.fromisoformat(week)
    except ValueError as exc:
        raise ValueError(f"week must be a Monday as YYYY-MM-DD, got {week!r}") from exc
    if monday.weekday() != 0:
        raise ValueError(f"week must be a Monday, got {week} ({monday:%A})")
    return monday


def count_examples(examples: DataFrame, items: DataFrame, cfg: ExampleConfig) -> ExampleCounts:
    """Rows per split, negatives per row and kind, users and items of `examples` (all
    splits, with `split`) and the items table."""
    by_split = {
        r["split"]: r
        for r in examples.groupBy("split")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(
                ((F.size("negatives") != cfg.negatives) | (F.size("negative_kinds") != F.size("negatives"))).cast(
                    "long"
                )
            ).alias("bad_k"),
            F.min("timestamp").alias("min_ts"),
            F.max("timestamp").alias("max_ts"),
        )
        .collect()
    }
    kinds = {
        r["kind"]: int(r["n"])
        for r in examples.select(F.explode("negative_kinds").alias("kind"))
        .groupBy("kind")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    it = items.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("active").cast("long")).alias("active")).first()
    iso = lambda t: t.astimezone(UTC).isoformat() if t is not None else None  # noqa: E731
    return ExampleCounts(
        counts={s: int(by_split[s]["rows"]) if s in by_split else 0 for s in SPLITS},
        negatives_per_row=cfg.negatives,
        bad_negative_rows=sum(int(r["bad_k"] or 0) for r in by_split.values()),
        negative_mix={kind: kinds.get(kind, 0) for kind in NEGATIVE_KINDS},
        users=int(examples.select("user_id").distinct().count()),
        items=int(it["n"]),
        active_items=int(it["active"] or 0),
        timestamp_ranges={s: [iso(by_split[s]["min_ts"]), iso(by_split[s]["max_ts"])] for s in SPLITS if s in by_split},
    )


def training_partition(
    spark: SparkSession, lake: Lake, week: str, cfg: ExampleConfig, staging_dir: Path | None = None
) -> ExamplesSummary:
    """Build and write `training/week=W/{train,validation,test,items,user_histories,user_seen}/`.

    Reads the sessions and catalog snapshots of the window days that exist. Raises
    TrainingDataError when a split would be empty (naming the days present), when no
    catalog snapshot is in the window, or when a row cannot get K negatives.
    """
    monday = _parse_week(week)
    week_end = monday + timedelta(days=6)
    days = [d.isoformat() for d in window_dates(week_end, cfg)]
    ranges = split_ranges(week_end, cfg)
    session_days = sorted(set(lake.list_partitions(SESSIONS)) & set(days))
    catalog_days = sorted(set(lake.list_partitions(CATALOG)) & set(days))
    lacking = [s for s, (a, b) in ranges.items() if not any(a.isoformat() <= d <= b.isoformat() for d in session_days)]
    if lacking:
        raise TrainingDataError(
            f"week {week}: no sessions for the {', '.join(lacking)} split(s) "
            f"(window {days[0]}..{days[-1]}, {_range_text(ranges)}); session days present: {session_days or 'none'}"
        )
    if not catalog_days:
        raise TrainingDataError(f"week {week}: no catalog snapshot in the window {days[0]}..{days[-1]}")

    with tempfile.TemporaryDirectory(prefix="recsys-training-") as tmp:
        from recsys_dagster.spark.io import read_lake_parquet, write_lake_parquet

        stage = Path(staging_dir) if staging_dir is not None else Path(tmp)
        sessions = read_lake_parquet(spark, lake, [day_prefix(SESSIONS, d) for d in session_days], stage / "sessions")
        catalog = read_lake_parquet(spark, lake, [day_prefix(CATALOG, d) for d in catalog_days], stage / "catalog")
        if sessions is None or catalog is None:  # listed a moment ago; gone now
            raise TrainingDataError(f"week {week}: sessions or catalog data disappeared while reading")
        built = _build(sessions, catalog, week_end, cfg)
        examples, items = built.examples, built.items
        counts = count_examples(examples, items, cfg)
        empty = [s for s in SPLITS if counts.counts[s] == 0]
        if empty:
            raise TrainingDataError(
                f"week {week}: the {', '.join(empty)} split(s) would be empty ({_range_text(ranges)}); "
                f"session days present: {session_days}"
            )
        if counts.bad_negative_rows:
            raise TrainingDataError(
                f"week {week}: {counts.bad_negative_rows} rows cannot get {cfg.negatives} negatives "
                "(their users' positives cover nearly every active item)"
            )
        base = week_prefix(TRAINING, week)
        files: dict[str, int] = {}
        for s in SPLITS:
            n_files = max(1, counts.counts[s] // 1_000_000)
            files[s] = write_lake_parquet(
                examples.filter(F.col("split") == s), lake, f"{base}/{s}", stage / "out", n_files
            )
        files["items"] = write_lake_parquet(items, lake, f"{base}/items", stage / "out")
        files["user_histories"] = write_lake_parquet(
            built.user_histories, lake, f"{base}/user_histories", stage / "out"
        )
        files["user_seen"] = write_lake_parquet(built.user_seen, lake, f"{base}/user_seen", stage / "out")
    return ExamplesSummary(
        **counts.__dict__,
        week=week,
        window=[days[0], days[-1]],
        window_days_present=session_days,
        catalog_days_present=catalog_days,
        split_ranges={s: [a.isoformat(), b.isoformat()] for s, (a, b) in ranges.items()},
        files=files,
    )


def _range_text(ranges: dict[str, tuple[date, date]]) -> str:
    return ", ".join(f"{s} {a}..{b}" for s, (a, b) in ranges.items())
