"""Time-aware item features: counts before a day (never on or after it), age, and the
item tower reading them per (day, item) in training exactly as it does per row."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import synthetic_tables

from recsys_dagster.ml.artifacts import TrainSummary
from recsys_dagster.ml.features import ItemFeatures
from recsys_dagster.ml.model import build_model, scores_at
from recsys_dagster.ml.package import catalog_clock, embed_catalog
from recsys_dagster.ml.popularity import DAY_US, N_TIME_FEATURES, WINDOWS_DAYS, ItemClock, first_seen_days
from recsys_dagster.ml.train import _batch_item_vectors, item_feature_table

DAY0 = 20_000  # a day number in 2024


def brute(item: np.ndarray, day: np.ndarray, qi: int, qd: int, w: int) -> int:
    return int(((item == qi) & (day >= qd - w) & (day < qd)).sum())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40), st.integers(0, DAY_US - 1)), max_size=80),
    st.lists(st.tuples(st.integers(0, 7), st.integers(-5, 80)), min_size=1, max_size=20),
)
def test_counts_equal_brute_force_and_never_look_ahead(events, queries):
    item = np.array([e[0] for e in events], dtype=np.int64)
    day = np.array([DAY0 + e[1] for e in events], dtype=np.int64)
    ts = day * DAY_US + np.array([e[2] for e in events], dtype=np.int64)
    clock = ItemClock.fit(item, ts, np.full(8, np.nan))
    qi = np.array([q[0] for q in queries], dtype=np.int64)
    qd = np.array([DAY0 + q[1] for q in queries], dtype=np.int64)
    got = clock.features(qi, qd)
    assert got.shape == (len(queries), N_TIME_FEATURES) and got.dtype == np.float32
    for r, (i, d) in enumerate(zip(qi, qd, strict=True)):
        for j, w in enumerate(WINDOWS_DAYS):
            want = 0 if i == 0 else brute(item, day, i, d, w)  # item 0 is padding: never counted
            assert got[r, j] == pytest.approx(np.log1p(want)), (i, d, w)
    # Positives on the last asked day or later change none of the answers: no look-ahead.
    last = int(qd.max())
    later = ItemClock.fit(
        np.concatenate([item, qi, qi]),
        np.concatenate([ts, np.full(len(qi), last * DAY_US), np.full(len(qi), (last + 3) * DAY_US + 5)]),
        np.full(8, np.nan),
    ).features(qi, qd)
    np.testing.assert_array_equal(later, got)


def test_age_from_first_seen_and_unknown():
    first = np.array([np.nan, DAY0 - 3.5, np.nan, DAY0 + 2.0])
    clock = ItemClock.fit(np.array([1, 1]), np.array([DAY0 - 1, DAY0 - 1]) * DAY_US, first)
    f = clock.features(np.array([1, 2, 3, 0]), np.int64(DAY0))
    assert f[0, -1] == pytest.approx(np.log1p(3.5))
    assert f[1, -1] == -1.0  # first_seen unknown
    assert f[2, -1] == 0.0  # not yet listed on that day: age 0, as a brand-new listing
    assert f[3, -1] == -1.0
    assert f[0, 0] == pytest.approx(np.log1p(2))  # both positives were the day before
    # A catalog row the model never saw (index 0) takes its age from the items table.
    cold = clock.features(np.array([0]), np.int64(DAY0), first_day=np.array([DAY0 - 1.0]))
    np.testing.assert_allclose(cold[0], [0, 0, 0, np.log1p(1.0)], rtol=1e-6)


def test_first_seen_days_reads_timestamps_and_nulls():
    t = pa.table({"first_seen": pa.array([datetime(1970, 1, 3, 12, tzinfo=UTC), None], pa.timestamp("us", tz="UTC"))})
    got = first_seen_days(t)
    assert got[0] == pytest.approx(2.5) and np.isnan(got[1])
    assert np.isnan(first_seen_days(pa.table({"x": [1]}))).all()


@pytest.fixture(scope="module")
def time_model():
    train, _, items = synthetic_tables(n_users=30, n_items=60, per_user=5, cold_items=6, seed=2)
    features = ItemFeatures.fit(items, n_buckets=128)
    torch.manual_seed(0)
    model = build_model(features, dim=16, n_time=N_TIME_FEATURES).eval()
    return model, features, items, train


def _scoring_inputs(time_model):
    """The model, its feature table, the train positives (id index, time) and their clock."""
    model, features, items, train = time_model
    table = item_feature_table(features, items, torch.device("cpu"))
    ids = features.item_index(train.column("item_id").to_numpy(zero_copy_only=False))
    ts = train.column("timestamp").cast(pa.int64()).to_numpy()
    return model, table, ids, ts, ItemClock.fit(ids, ts, np.full(features.n_ids, np.nan))


def test_pairwise_batch_vectors_equal_per_row_vectors(time_model):
    """Training dedups content per item and time per (day, item); each row's vector must be
    what the tower gives that item with that day's features."""
    model, table, ids, ts, clock = _scoring_inputs(time_model)
    rng = np.random.default_rng(0)
    items_q = torch.from_numpy(rng.choice(ids, 200))
    days_q = torch.from_numpy(rng.choice(np.unique(ts // DAY_US), 200) + rng.integers(0, 3, 200))
    with torch.no_grad():
        got, _ = _batch_item_vectors(model, table, items_q, days_q, clock)
        t = torch.from_numpy(clock.features(items_q.numpy(), days_q.numpy()))
        want = model.item_tower({k: v[items_q] for k, v in table.items()}, t)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # The same item on a day it was popular and on a day it was not: different vectors.
    busy = np.bincount(ids).argmax()
    far = int(ts.max() // DAY_US) + 100
    near = int(np.sort(ts[ids == busy])[-1] // DAY_US) + 1
    v, _ = _batch_item_vectors(model, table, torch.tensor([busy, busy]), torch.tensor([near, far]), clock)
    assert not torch.allclose(v[0], v[1])


def test_embed_catalog_needs_the_clock_of_a_time_aware_model(time_model, tmp_path):
    import io

    model, features, items, train = time_model
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    summary = TrainSummary(
        week="2026-10-12", dim=16, history_len=5, id_dropout=0.3, temperature=0.05, epochs_run=1, best_epoch=1,
        device="cpu", examples_per_s=1.0, load_seconds=0.0, compute_seconds=0.0, final_metrics={}, history=[],
        mlflow_run_id="r", mlflow_model_version="1", onnx_max_abs_diff=0.0, time_windows=list(WINDOWS_DAYS),
    )  # fmt: skip
    fj = features.to_json().encode()
    with pytest.raises(ValueError, match="time-aware model needs"):
        embed_catalog(summary, fj, weights.getvalue(), items)
    clock = catalog_clock(fj, items, train)
    day = int(train.column("timestamp").cast(pa.int64()).to_numpy().max() // DAY_US) + 1
    emb, npy = embed_catalog(summary, fj, weights.getvalue(), items, clock, day)
    assert emb.shape == (items.num_rows, 16) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    later, _ = embed_catalog(summary, fj, weights.getvalue(), items, clock, day + 60)
    assert not np.allclose(emb, later)  # popularity decays out of the windows: other vectors
    with pytest.raises(ValueError, match="time windows"):
        embed_catalog(
            TrainSummary.from_dict({**summary.to_dict(), "time_windows": [2, 5, 9]}), fj, weights.getvalue(), items
        )


def test_the_refit_counts_its_validation_split_once():
    """The refit trains on every split and validates on the last one, already inside its
    train data: the clock must not count those positives twice."""
    import dataclasses

    from recsys_dagster.ml.train import TrainConfig, _prepare_inputs

    train, val, items = synthetic_tables(n_users=30, n_items=60, per_user=5, cold_items=6, seed=2)
    cfg = TrainConfig(dim=16, epochs=1, device="cpu", title_buckets=128, history_len=5)
    gated = _prepare_inputs(train, val, items, cfg)
    assert len(gated.clock.keys) == train.num_rows + val.num_rows
    everything = pa.concat_tables([train, val])
    refit = _prepare_inputs(everything, val, items, dataclasses.replace(cfg, keep_last=True))
    assert len(refit.clock.keys) == everything.num_rows
    np.testing.assert_array_equal(np.sort(refit.clock.keys), np.sort(gated.clock.keys))


def test_in_batch_positives_are_scored_as_of_each_rows_day(time_model):
    """Row i sees positive j with j's popularity on day i (never on j's own, later day):
    the shortcut in the loss equals the full item vector built for that day."""
    model, table, ids, ts, clock = _scoring_inputs(time_model)
    rng = np.random.default_rng(1)
    pos = torch.from_numpy(rng.choice(ids, 12))
    day = torch.from_numpy(rng.choice(np.unique(ts // DAY_US), 12))
    user = torch.nn.functional.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    with torch.no_grad():
        content = torch.nn.functional.normalize(model.item_tower.content({k: v[pos] for k, v in table.items()}), dim=-1)
        days, row_day = torch.unique(day, return_inverse=True)
        grid = clock.features(pos.repeat(len(days)).numpy(), days.repeat_interleave(12).numpy())
        beta = model.item_tower.popularity(torch.from_numpy(grid)).view(len(days), 12)[row_day]
        got = scores_at(user, content, beta)
        want = torch.stack(
            [
                user[i]
                @ model.item_tower(
                    {k: v[pos] for k, v in table.items()},
                    torch.from_numpy(clock.features(pos.numpy(), np.full(12, int(day[i])))),
                ).T
                for i in range(12)
            ]
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
