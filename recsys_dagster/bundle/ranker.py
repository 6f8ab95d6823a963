"""The week's ranking stage over the lake: fit on validation, gate on test, refit to ship.

Writes `artifacts/week=W/ranker/`:
- `eval/` — the gated ranker (fitted on the validation queries) with item statistics at
  the test cut: the offline evaluation scores exactly this through the serving Engine;
- `ship/` — what the bundle carries: the refit (validation + test queries, the
  early-stopped number of trees, statistics over the whole window) or, with refit off,
  a copy of `eval/`;
- `report.json` (`RankerReport`) and both LightGBM text models (for inspection and MLflow).

Plain function called by the `ranker` asset; no dagster, no torch.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_dagster.bundle.assemble import artifact_prefix, assemble_bundle_dir
from recsys_dagster.bundle.evaluation import split_start
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.ml.evaluate import PRIOR_COLUMNS, Queries, _micros, build_queries, interactions_from
from recsys_dagster.ml.ranker import (
    RankerConfig,
    RankerReport,
    RankQueries,
    choose_trending_days,
    concat,
    fit_fixed,
    fit_lambdarank,
    importance,
    item_stats,
    make_spec,
    onnx_parity,
    rank_data,
    to_onnx,
)
from recsys_dagster.serving.ranker import RANKER_MODEL, RANKER_SPEC, RANKER_STATS
from recsys_dagster.spark.examples import read_summary

REPORT = "report.json"
EVAL, SHIP = "eval", "ship"


def ranker_prefix(week: str, variant: str | None = None) -> str:
    base = artifact_prefix(week, "ranker")
    return base if variant is None else f"{base}/{variant}"


def rank_queries(q: Queries, row_of: dict[str, int]) -> RankQueries:
    def rows(ids: list[str]) -> np.ndarray:
        return np.array([row_of[x] for x in ids if x in row_of], dtype=np.int64)

    profiles = [rows(s) for s in q.seen]
    return RankQueries(
        user_ids=q.user_ids,
        histories=q.histories,
        devices=q.devices,
        hours=q.hours,
        profiles=profiles,
        seen=profiles,
        targets=[rows(t) for t in q.targets],
    )


def _write_variant(lake: Lake, prefix: str, onnx_model: bytes, spec, stats, workdir: Path) -> None:
    lake.put_bytes(f"{prefix}/{RANKER_MODEL}", onnx_model)
    lake.put_bytes(f"{prefix}/{RANKER_SPEC}", spec.to_json().encode())
    path = workdir / f"{prefix.replace('/', '_')}.npz"
    stats.save(path)
    lake.put_bytes(f"{prefix}/{RANKER_STATS}", path.read_bytes())


def fit_week_ranker(lake: Lake, week: str, workdir: Path, cfg: RankerConfig) -> RankerReport:
    from recsys_dagster.serving.engine import Engine

    clock: dict[str, float] = {}
    tic = time.perf_counter()
    base = week_prefix(TRAINING, week)
    cand_dir = workdir / "two_tower"
    assemble_bundle_dir(lake, week, cand_dir, stage="two_tower")
    engine = Engine.from_dir(cand_dir, version=f"two-tower-{week}")
    tower = tower_run(lake, week)
    items = pq.read_table(cand_dir / "items.parquet")
    examples, _ = read_summary(lake, week)
    validation_start = split_start(examples.split_ranges, "validation")
    test_start = split_start(examples.split_ranges, "test")
    window_end = date.fromisoformat(examples.split_ranges["test"][1]) + timedelta(days=1)
    end_us = _micros(split_start({"end": [window_end.isoformat()]}, "end"))
    val_us, test_us = _micros(validation_start), _micros(test_start)

    query_columns = [*PRIOR_COLUMNS, "history", "device_type", "hour"]
    train = lake.read_parquet(f"{base}/train", columns=PRIOR_COLUMNS)
    validation = lake.read_parquet(f"{base}/validation", columns=query_columns)
    test = lake.read_parquet(f"{base}/test", columns=query_columns)
    before_test = pa.concat_tables([train, validation.select(PRIOR_COLUMNS)])
    everything = pa.concat_tables([before_test, test.select(PRIOR_COLUMNS)])
    active = set(np.asarray(engine.catalog.item_id)[np.asarray(engine.catalog.active, dtype=bool)].tolist())
    row_of = engine.catalog.row_of
    val_q = rank_queries(build_queries(validation, active, train, split="validation"), row_of)
    test_q = rank_queries(build_queries(test, active, before_test, split="test"), row_of)

    import pyarrow.compute as pc

    users = pc.unique(everything.column("user_id"))
    positives = interactions_from(everything, users, pa.array(engine.catalog.item_id.tolist(), pa.string()))
    trending, trending_choice = choose_trending_days(
        positives.before(val_us), cut_us=val_us, queries=val_q, windows=cfg.trending_days, depth=cfg.depth_trending
    )
    clock["prepare"] = time.perf_counter() - tic

    def stats_at(cut_us: int):
        return item_stats(positives, items, cut_us=cut_us, trending_days=trending, cfg=cfg)

    tic = time.perf_counter()
    spec_val = make_spec(
        cfg, trending_days=trending, cut_us=val_us, trained_on=[], trees=0, refit=False, tower_run_id=tower
    )
    data_val = rank_data(engine, stats_at(val_us), spec_val, val_q)
    names = spec_val.feature_names
    clock["validation_features"] = time.perf_counter() - tic
    tic = time.perf_counter()
    fit = fit_lambdarank(data_val, cfg, names)
    clock["fit"] = time.perf_counter() - tic

    tic = time.perf_counter()
    stats_test = stats_at(test_us)
    spec_eval = make_spec(
        cfg,
        trending_days=trending,
        cut_us=test_us,
        trained_on=["validation"],
        trees=fit.best_iteration,
        refit=False,
        tower_run_id=tower,
    )
    data_test = rank_data(engine, stats_test, spec_eval, test_q)
    clock["test_features"] = time.perf_counter() - tic
    eval_onnx = to_onnx(fit.booster, len(names))
    parity = onnx_parity(fit.booster, eval_onnx, data_val.features)
    _write_variant(lake, ranker_prefix(week, EVAL), eval_onnx, spec_eval, stats_test, workdir)
    lake.put_bytes(f"{ranker_prefix(week)}/ranker_eval.txt", fit.booster.model_to_string().encode())

    parity_refit = parity
    ship_booster = fit.booster
    if cfg.refit:
        tic = time.perf_counter()
        ship_booster = fit_fixed(concat(data_val, data_test), cfg, names, fit.best_iteration, tuned=fit.params)
        ship_onnx = to_onnx(ship_booster, len(names))
        parity_refit = onnx_parity(ship_booster, ship_onnx, data_test.features)
        spec_ship = make_spec(
            cfg,
            trending_days=trending,
            cut_us=end_us,
            trained_on=["validation", "test"],
            trees=fit.best_iteration,
            refit=True,
            tower_run_id=tower,
        )
        _write_variant(lake, ranker_prefix(week, SHIP), ship_onnx, spec_ship, stats_at(end_us), workdir)
        clock["refit"] = time.perf_counter() - tic
    else:
        _write_variant(lake, ranker_prefix(week, SHIP), eval_onnx, spec_eval, stats_test, workdir)
    lake.put_bytes(f"{ranker_prefix(week)}/ranker_ship.txt", ship_booster.model_to_string().encode())

    report = RankerReport(
        best_iteration=fit.best_iteration,
        holdout_ndcg_at_20=fit.holdout_ndcg_at_20,
        validation_queries=data_val.n_queries,
        validation_pool_recall=data_val.pool_recall,
        test_queries=data_test.n_queries,
        test_pool_recall=data_test.pool_recall,
        trending_days=trending,
        trending_choice=trending_choice,
        onnx_max_abs_diff=parity,
        onnx_max_abs_diff_refit=parity_refit,
        refit=cfg.refit,
        feature_importance=importance(fit.booster, names),
        tuned_params=fit.params,
        tuning_trials=fit.trials,
        seconds={k: round(v, 2) for k, v in clock.items()},
    )
    lake.put_bytes(f"{ranker_prefix(week)}/{REPORT}", report.to_json().encode())
    return report


def tower_run(lake: Lake, week: str) -> str:
    """The MLflow run of the week's two-tower model (gated and refit share it)."""
    from recsys_dagster.ml.artifacts import SUMMARY, TrainSummary

    return TrainSummary.from_json(lake.get_bytes(f"{artifact_prefix(week, 'model')}/{SUMMARY}")).mlflow_run_id


def read_report(lake: Lake, week: str) -> RankerReport | None:
    key = f"{ranker_prefix(week)}/{REPORT}"
    return RankerReport.from_json(lake.get_bytes(key)) if lake.exists(key) else None
