"""Training: loss, quality vs popularity, cold items, checkpoint/resume, determinism,
early stopping, epochs=0 and MLflow tracking, on small synthetic data with planted
user-category structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import synthetic_tables

from recsys_dagster.ml.embed import item_embeddings
from recsys_dagster.ml.model import UNKNOWN_DEVICE, UNKNOWN_HOUR
from recsys_dagster.ml.train import CHECKPOINT, TrainConfig, resolve_device, train_two_tower

COLD = 24
TINY = dict(n_users=60, n_items=96, per_user=6, cold_items=16, seed=3)


def _cfg(**kw) -> TrainConfig:
    base = dict(dim=16, epochs=2, batch_size=128, title_buckets=512, patience=5, device="cpu", max_eval_users=500)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train, val, items = synthetic_tables(n_users=160, n_items=240, per_user=10, cold_items=COLD, seed=0)
    res = train_two_tower(train, val, items, _cfg(epochs=3, batch_size=256), tmp_path_factory.mktemp("ck"))
    return res, items


def test_loss_decreases_and_beats_popularity(trained):
    res, _ = trained
    losses = [h["train_loss"] for h in res.history]
    assert res.epochs_run == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] * 0.9
    m = res.final_metrics
    assert m["val_users"] == 160 and m["best_epoch"] == res.best_epoch
    # Users draw 90% of positives from one category; popularity cannot know which.
    assert m["val_recall@20"] > 1.5 * m["val_recall@20_popularity"] + 0.02
    assert 0 < m["val_ndcg@20"] <= 1 and 0 <= m["val_ndcg@20_popularity"] <= 1
    assert res.device == "cpu" and res.examples_per_s > 0 and res.compute_seconds > 0 and res.load_seconds > 0


def test_cold_items_land_near_their_category(trained):
    from recsys_dagster.ml.package import catalog_clock
    from recsys_dagster.ml.popularity import DAY_US

    res, items = trained
    train, _, _ = synthetic_tables(n_users=160, n_items=240, per_user=10, cold_items=COLD, seed=0)
    with pytest.raises(ValueError, match="time-aware"):  # the time features are never silently zero
        item_embeddings(res.model, res.features, items)
    clock = catalog_clock(res.features.to_json().encode(), items, train)
    day = int(train.column("timestamp").cast("int64").to_numpy().max() // DAY_US) + 1
    ids = res.features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))
    emb = item_embeddings(res.model, res.features, items, clock.features(ids, np.int64(day)))
    cat = np.arange(items.num_rows) % 8
    cold = np.arange(items.num_rows - COLD, items.num_rows)
    warm = np.arange(items.num_rows - COLD)
    assert (items.column("train_count").to_numpy()[cold] == 0).all()
    sims = emb[cold] @ emb[warm].T
    same = cat[cold][:, None] == cat[warm][None, :]
    closer = np.where(same, sims, 0).sum(1) / same.sum(1) > np.where(~same, sims, 0).sum(1) / (~same).sum(1)
    assert closer.mean() > 0.9  # never-seen items sit with their category, from content alone


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    train, val, items = synthetic_tables(**TINY)
    full = train_two_tower(train, val, items, _cfg(), tmp_path / "a")

    def crash(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_two_tower(train, val, items, _cfg(), tmp_path / "b", on_epoch=crash)
    assert (tmp_path / "b" / CHECKPOINT).exists()
    seen: list[int] = []
    resumed = train_two_tower(train, val, items, _cfg(), tmp_path / "b", on_epoch=lambda e, r: seen.append(e))
    assert seen == [2] and resumed.resumed_from_epoch == 1
    assert resumed.epochs_run == full.epochs_run == 2
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # A finished checkpoint resumes to the same result without training again.
    again = train_two_tower(train, val, items, _cfg(), tmp_path / "b", on_epoch=lambda e, r: seen.append(e))
    assert seen == [2] and again.epochs_run == 2


def test_context_dropout_trains_the_unknown_context(tmp_path):
    train, val, items = synthetic_tables(**TINY)
    init = train_two_tower(train, val, items, _cfg(epochs=0), tmp_path / "init").model.user_tower
    plain = train_two_tower(train, val, items, _cfg(context_dropout=0.0), tmp_path / "plain").model.user_tower
    dropped = train_two_tower(train, val, items, _cfg(context_dropout=0.5), tmp_path / "drop")
    tower = dropped.model.user_tower

    def moved(t, table: str, row: int) -> float:
        return float((getattr(t, table).weight[row] - getattr(init, table).weight[row]).detach().abs().max())

    # Without dropout the unknown rows never see a gradient (only AdamW's weight decay);
    # with it they train like any other row.
    for table, row in (("device_emb", UNKNOWN_DEVICE), ("hour_emb", UNKNOWN_HOUR)):
        assert moved(plain, table, row) < 1e-6
        assert moved(tower, table, row) > max(1e-3, 0.25 * moved(tower, table, 0))  # trained like a known row

    hist = torch.nn.functional.normalize(torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    mask = torch.ones(3, 4)
    unknown = (torch.full((3,), UNKNOWN_DEVICE), torch.full((3,), UNKNOWN_HOUR))
    known = (torch.tensor([0, 1, 2]), torch.tensor([8, 13, 20]))
    with torch.no_grad():
        u_unknown = tower(hist, mask, *unknown)
        u_known = tower(hist, mask, *known)
        u_init = init(hist, mask, *unknown)
    assert torch.isfinite(u_unknown).all()
    torch.testing.assert_close(u_unknown.norm(dim=1), torch.ones(3))
    assert (u_unknown - u_known).abs().max() > 1e-3 and (u_unknown - u_init).abs().max() > 1e-2
    m = dropped.final_metrics
    assert 0 <= m["val_recall@20_unknown_context"] <= 1 and m["val_recall@20"] > m["val_recall@20_popularity"]


def test_a_checkpoint_with_another_context_dropout_is_not_resumed(tmp_path):
    train, val, items = synthetic_tables(**TINY)
    train_two_tower(train, val, items, _cfg(context_dropout=0.25), tmp_path)
    seen: list[int] = []
    train_two_tower(train, val, items, _cfg(context_dropout=0.5), tmp_path, on_epoch=lambda e, r: seen.append(e))
    assert seen == [1, 2]  # started fresh
    with pytest.raises(ValueError, match="context_dropout"):
        _cfg(context_dropout=-0.1)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    train, val, items = synthetic_tables(**TINY)
    a = train_two_tower(train, val, items, _cfg(epochs=1, resume=False), tmp_path / "a")
    b = train_two_tower(train, val, items, _cfg(epochs=1, resume=False), tmp_path / "b")
    c = train_two_tower(train, val, items, _cfg(epochs=1, seed=7, resume=False), tmp_path / "c")
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_early_stopping_and_zero_epochs(tmp_path):
    train, val, items = synthetic_tables(**TINY)
    # lr=0: validation recall never improves, so patience=1 stops after epoch 2 of 6.
    stopped = train_two_tower(train, val, items, _cfg(epochs=6, patience=1, lr=0.0), tmp_path / "a")
    assert stopped.epochs_run == 2 and stopped.best_epoch == 1
    zero = train_two_tower(train, val, items, _cfg(epochs=0), tmp_path / "b")
    assert zero.epochs_run == 0 and zero.history == [] and zero.best_epoch == 0
    assert 0 <= zero.final_metrics["val_recall@20"] <= 1
    assert zero.final_metrics["val_recall@20_popularity"] == stopped.final_metrics["val_recall@20_popularity"]


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_mlflow_run_registered_version_and_champion(trained, tmp_path):
    import mlflow

    from recsys_dagster.ml import tracking
    from recsys_dagster.settings import Settings

    env = {"RECSYS_HOME": str(tmp_path / "home"), "MLFLOW_UI_URL": "http://mlflow.example:5000/"}
    store = tracking.TrackingStore.from_settings(Settings.from_env(env))
    res, _ = trained
    with tracking.start_run(store, "week-2026-10-12", tags={"week": "2026-10-12"}) as run:
        tracking.log_params({"dim": 16, "epochs": 3})
        for h in res.history:
            tracking.log_epoch_metrics(h["epoch"], h)
        run_id, version = tracking.log_model_and_register(store, res.model)
    assert run_id == run.info.run_id and version == "1"
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    data = mlflow.get_run(run_id).data
    assert data.params["dim"] == "16" and "val_recall_at_20" in data.metrics and data.tags["week"] == "2026-10-12"
    assert tracking.champion_version(store) is None
    tracking.set_champion_alias(store, version)
    assert tracking.champion_version(store) == "1"
    url = tracking.run_url(store, run_id)
    assert url.startswith("http://mlflow.example:5000/#/experiments/") and url.endswith(f"/runs/{run_id}")
    assert any((tmp_path / "home" / "mlartifacts").rglob("MLmodel"))
    loaded = mlflow.pytorch.load_model(f"models:/{store.model_name}@champion")
    args = [torch.from_numpy(a) for a in tracking.user_tower_input_example(16, batch=3, length=7)]
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args), res.model.user_tower(*args))


def test_optuna_search_within_budget_keeps_the_best_trial_and_logs_it(tmp_path):
    import mlflow

    from recsys_dagster.ml import tracking
    from recsys_dagster.ml.package import fit_week
    from recsys_dagster.ml.tune import SPACE
    from recsys_dagster.settings import Settings

    train, val, items = synthetic_tables(**TINY)
    cfg = _cfg(epochs=1, tune_seconds=300, tune_trials=3, refit=False)
    store = tracking.TrackingStore.from_settings(Settings.from_env({"RECSYS_HOME": str(tmp_path / "home")}))
    week = fit_week(train, val, items, cfg, week="2026-10-12", store=store, checkpoint_dir=tmp_path / "ck")
    trials = week.summary.tuning
    assert len(trials) == 3
    # The configured values are the first trial; the kept model is the best trial's.
    assert all(trials[0][name] == pytest.approx(getattr(cfg, name)) for name, *_ in SPACE)
    best = max(trials, key=lambda t: t["val_recall@20"])
    assert week.summary.final_metrics["val_recall@20"] == pytest.approx(best["val_recall@20"])
    assert all(getattr(week.config, name) == pytest.approx(best[name]) for name, *_ in SPACE)
    assert week.summary.temperature == pytest.approx(best["temperature"])
    data = mlflow.get_run(week.summary.mlflow_run_id).data
    assert float(data.params["tuned_lr"]) == pytest.approx(best["lr"]) and data.params["tune_trials_run"] == "3"
    history = mlflow.MlflowClient(store.tracking_uri).get_metric_history(
        week.summary.mlflow_run_id, "tune/val_recall_at_20"
    )
    assert sorted(m.value for m in history) == pytest.approx(sorted(t["val_recall@20"] for t in trials))
    with pytest.raises(ValueError, match="tune_seconds"):
        _cfg(tune_seconds=-1)
