"""Run a Great Expectations suite on a pandas frame and keep a small, JSON-safe result.

The suites themselves are built in `expectations.py` (re-exported here).

One ephemeral GX context per process (building it costs about a second), with one pandas
dataframe asset per suite; suites are built once too. A lock serialises runs because the
GX context is not documented as thread-safe.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any

import numpy as np
import pandas as pd

from recsys_dagster.checks.expectations import (
    SUITES,
    catalog_suite,
    events_suite,
    prepare_frame,
    sessions_suite,
)
from recsys_dagster.contract import QUALITY
from recsys_dagster.lake import Lake

__all__ = [
    "QualityResult",
    "catalog_suite",
    "events_suite",
    "run_suite",
    "save_result",
    "sessions_suite",
    "suite",
]

MAX_UNEXPECTED = 5
_LOCK = threading.Lock()


@dataclass
class QualityResult:
    success: bool
    suite: str
    evaluated: int
    failed: list[dict[str, Any]]
    statistics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        if not self.failed:
            return f"all {self.evaluated} expectations passed"
        rows = [
            f"{len(self.failed)} of {self.evaluated} expectations failed",
            "",
            "| expectation | column | unexpected | % | examples |",
            "|---|---|---|---|---|",
        ]
        for f in self.failed:
            pct = f.get("unexpected_percent")
            examples = f.get("exception") or ", ".join(map(str, f.get("partial_unexpected_list") or []))
            if not examples and "observed_value" in f:
                examples = f"observed {f['observed_value']}"
            rows.append(
                "| {} | {} | {} | {} | {} |".format(
                    f["expectation"],
                    f.get("column") or "",
                    "" if f.get("unexpected_count") is None else f["unexpected_count"],
                    "" if pct is None else f"{pct:.2f}",
                    examples.replace("|", "\\|").replace("\n", " "),
                )
            )
        return "\n".join(rows)


@lru_cache(maxsize=1)
def gx_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


@cache
def _batch_definition(name: str) -> Any:
    ctx = gx_context()
    try:
        source = ctx.data_sources.get("recsys")
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas("recsys")
    return source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")


@cache
def suite(name: str) -> Any:
    if name not in SUITES:
        raise ValueError(f"unknown quality suite {name!r}; known: {', '.join(sorted(SUITES))}")
    gx_context()  # GX binds a suite to the current context at creation
    return SUITES[name]()


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    return str(value)


def _columns_of(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return []


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX 1.x nests exception info by metric id, or not at all: take the first message."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _failure(res: Any, present: set[str]) -> dict[str, Any]:
    cfg = res.expectation_config
    out = dict(res.result or {})
    columns = _columns_of(cfg.kwargs)
    failure: dict[str, Any] = {
        "expectation": cfg.type,
        "column": ",".join(columns) or None,
        "unexpected_count": out.get("unexpected_count"),
        "unexpected_percent": out.get("unexpected_percent"),
        "partial_unexpected_list": _json_safe(list(out.get("partial_unexpected_list") or [])[:MAX_UNEXPECTED]),
    }
    if "observed_value" in out:
        failure["observed_value"] = _json_safe(out["observed_value"])
    # GX bundles metrics, so its message may name another missing column: say it plainly.
    missing = [c for c in columns if c not in present]
    if missing:
        failure["exception"] = f"column(s) not in the data: {', '.join(missing)}"
    elif (message := _exception_message(res.exception_info or {})) is not None:
        failure["exception"] = message
    return failure


def run_suite(name: str, df: pd.DataFrame) -> QualityResult:
    """Validate `df` against the suite `name` (`events`, `catalog`, `sessions`)."""
    expectation_suite = suite(name)
    frame = prepare_frame(name, df)
    with _LOCK:
        batch = _batch_definition(name).get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(expectation_suite)
    present = set(frame.columns)
    failed = [_failure(r, present) for r in result.results if not r.success]
    return QualityResult(
        success=bool(result.success),
        suite=name,
        evaluated=len(result.results),
        failed=failed,
        statistics=_json_safe(dict(result.statistics)) | {"rows": len(df)},
    )


def quality_key(asset: str, partition: str) -> str:
    return f"{QUALITY}/{asset}/{partition}.json"


def save_result(lake: Lake, asset: str, partition: str, result: QualityResult) -> str:
    """Write `quality/<asset>/<partition>.json`; returns the key."""
    key = quality_key(asset, partition)
    lake.write_json(key, result.to_dict())
    return key
