"""A week's catalog embeddings, for the gated model and its refit.

The item tower is time-aware (`ml/popularity.py`), so a vector depends on the day it is
meant for. The gated model's vectors are what the offline evaluation scores on the test
window: popularity from train + validation, as of the test split's first day. The refit
ships: popularity from the whole window, as of the day after it.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from recsys_dagster.bundle.assemble import artifact_prefix
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.spark.examples import read_summary

_EPOCH = date(1970, 1, 1)
_COLUMNS = ["item_id", "timestamp"]


def _day(d: date) -> int:
    return (d - _EPOCH).days


def embed_week(lake: Lake, week: str, items: pa.Table, variant: str) -> tuple[np.ndarray, bytes]:
    """Vectors of every `items` row from `artifacts/week=W/model{variant}/` ("" gated,
    "_refit" shipped), and their `.npy` bytes."""
    from recsys_dagster.ml.artifacts import FEATURES, SUMMARY, WEIGHTS, TrainSummary
    from recsys_dagster.ml.package import catalog_clock, embed_catalog

    model = artifact_prefix(week, f"model{variant}")
    summary = TrainSummary.from_json(lake.get_bytes(f"{model}/{SUMMARY}"))
    features, weights = lake.get_bytes(f"{model}/{FEATURES}"), lake.get_bytes(f"{model}/{WEIGHTS}")
    if not summary.time_windows:
        return embed_catalog(summary, features, weights, items)
    examples, _ = read_summary(lake, week)
    ranges = examples.split_ranges
    if variant == "":  # gated: what the test window could know, as of its first day
        splits, day = ["train", "validation"], _day(date.fromisoformat(ranges["test"][0]))
    else:  # shipped refit: the whole window, as of the day after it
        splits, day = ["train", "validation", "test"], _day(date.fromisoformat(ranges["test"][1]) + timedelta(days=1))
    base = week_prefix(TRAINING, week)
    positives = pa.concat_tables([lake.read_parquet(f"{base}/{s}", columns=_COLUMNS) for s in splits])
    return embed_catalog(summary, features, weights, items, catalog_clock(features, items, positives), day)
