"""Training loop of the two-tower model: sampled softmax over in-batch positives (logQ
corrected) plus each row's explicit negatives, per-epoch checkpoint and resume, early
stopping on validation Recall@20 (full ranking over active items)."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from recsys_dagster.ml.data import DataError, Examples, encode_examples, iterate_batches
from recsys_dagster.ml.features import ItemFeatures
from recsys_dagster.ml.model import ITEM_FEATURES, UNKNOWN_DEVICE, UNKNOWN_HOUR, TwoTower, build_model, scores_at
from recsys_dagster.ml.popularity import DAY_US, N_TIME_FEATURES, ItemClock, day_of, first_seen_by_index
from recsys_dagster.settings import documented

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
K_EVAL = 20
_NEG = -1e9  # masked logit (kept in fp32)
# Config fields that must match for a checkpoint to be resumed.
_RESUME_KEYS = (
    "dim",
    "batch_size",
    "lr",
    "weight_decay",
    "temperature",
    "id_dropout",
    "context_dropout",
    "history_len",
    "seed",
    "title_buckets",
    "time_features",
)


@dataclass
class TrainConfig:
    """Two-tower training hyper-parameters."""

    dim: int = documented(64, "Embedding dimension of both towers.")
    epochs: int = documented(8, "Maximum epochs (early stopping may end sooner); 0 keeps the initial model.")
    batch_size: int = documented(1024, "Examples per step; in-batch negatives come from the same batch.")
    lr: float = documented(3e-3, "AdamW learning rate.")
    weight_decay: float = documented(1e-6, "AdamW weight decay.")
    temperature: float = documented(0.05, "Softmax temperature of the dot-product logits.")
    id_dropout: float = documented(0.3, "Share of item ids dropped in training, so content alone must carry items.")
    context_dropout: float = documented(
        0.25,
        "Probability that a training example's device, and independently its hour, is replaced by the "
        "'unknown' index, so a request without device or hour gets a trained context.",
    )
    history_len: int = documented(50, "Most recent history items the user tower reads (set from the examples).")
    patience: int = documented(2, "Epochs without validation Recall@20 gain before stopping.")
    seed: int = documented(42, "Seed of initialisation, shuffling and dropout.")
    device: str = documented("auto", "auto | cpu | cuda | cuda:N")
    amp: bool = documented(True, "bf16 autocast on CUDA (ignored on CPU).")
    max_eval_users: int = documented(5000, "Validation users sampled for the per-epoch full-ranking Recall@20.")
    title_buckets: int = documented(2**15, "Hash buckets of title tokens.")
    time_features: bool = documented(
        True,
        "Time-aware item tower: each item's positives in the 1, 7 and 28 days before the example's day and its age "
        "then; the catalog is embedded with them as of the cut its vectors serve from.",
    )
    # Deterministic kernels (warn-only where none exists): CPU index/embedding backward
    # otherwise sums in thread order, and two runs with one seed drift by ~1e-7.
    deterministic: bool = documented(True, "Deterministic kernels, so one seed gives one model.")
    resume: bool = documented(True, "Resume from the run's last checkpoint when one matches this config.")
    refit: bool = documented(
        True,
        "After training, refit the towers on the whole window (train + validation + test) for the early-stopped "
        "number of epochs; the refit ships, the gated model is what the evaluation scored. Off: ship the gated model.",
    )
    tune_seconds: float = documented(
        0.0,
        "Time budget of an Optuna search of lr, temperature, id_dropout and context_dropout on validation "
        "Recall@20 (each trial a full training run; the configured values are the first). 0 = no search.",
    )
    tune_trials: int = documented(20, "Most trials of that search within its budget.")
    # Set by the refit itself: its validation split is inside its training data, so the
    # best epoch by validation means nothing there; the last epoch is the model.
    keep_last: bool = documented(False, "Keep the last epoch's weights rather than the best by validation.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.context_dropout <= 1.0:
            raise ValueError(f"context_dropout must be in [0, 1], got {self.context_dropout}")
        if self.tune_seconds < 0 or self.tune_trials < 1:
            raise ValueError(
                f"tune_seconds must be >= 0 and tune_trials >= 1, got {self.tune_seconds}, {self.tune_trials}"
            )


@dataclass
class TrainResult:
    model: TwoTower
    features: ItemFeatures
    epochs_run: int
    best_epoch: int
    history: list[dict]
    final_metrics: dict
    examples_per_s: float
    device: str
    load_seconds: float
    compute_seconds: float
    resumed_from_epoch: int = 0


def resolve_device(pref: str = "auto") -> torch.device:
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {pref!r} requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def item_feature_table(features: ItemFeatures, items: pa.Table, device: torch.device) -> dict[str, torch.Tensor]:
    """Content features indexed by id-vocabulary index (row 0 = padding), on `device`."""
    arrays = features.encode(items).as_dict()
    ids = arrays["ids"]
    known = ids > 0
    out = {}
    for k in ITEM_FEATURES:
        a = arrays[k]
        t = np.zeros((features.n_ids,) + a.shape[1:], dtype=np.int64)
        t[ids[known]] = a[known]
        out[k] = torch.from_numpy(t).to(device)
    out["ids"] = torch.arange(features.n_ids, device=device)
    return out


def time_table(clock: ItemClock | None, n_ids: int, day: int, device: torch.device) -> torch.Tensor | None:
    """Time features of every id-vocabulary index on `day`, [n_ids, N_TIME_FEATURES]."""
    if clock is None:
        return None
    return torch.from_numpy(clock.features(np.arange(n_ids), np.int64(day))).to(device)


@torch.no_grad()
def all_item_vectors(
    model: TwoTower, table: dict[str, torch.Tensor], time: torch.Tensor | None = None, batch: int = 8192
) -> torch.Tensor:
    """Eval-mode item vectors for every id-vocabulary index, [n_ids, D] float32; `time`: the
    items' time features (`time_table`) when the tower is time-aware."""
    was = model.training
    model.eval()
    n = table["ids"].shape[0]
    out = [
        model.item_tower(
            {k: v[lo : lo + batch] for k, v in table.items()}, None if time is None else time[lo : lo + batch]
        ).float()
        for lo in range(0, n, batch)
    ]
    model.train(was)
    return torch.cat(out)


def _pair_time(clock: ItemClock, items: torch.Tensor, days: torch.Tensor, n_ids: int) -> torch.Tensor:
    """Time features of (item, day) pairs, [N, N_TIME_FEATURES], looked up once per distinct pair."""
    pairs, pair_inv = torch.unique(days * n_ids + items, return_inverse=True)
    p = pairs.cpu().numpy()
    return torch.from_numpy(clock.features(p % n_ids, p // n_ids)).to(items.device)[pair_inv]


def _batch_item_vectors(
    model: TwoTower, table: dict[str, torch.Tensor], items: torch.Tensor, days: torch.Tensor, clock: ItemClock | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors of `items` scored on `days`, and each row's content part (unnormalised).
    The content part runs once per distinct item; the time part once per distinct (day, item)."""
    uniq, inv = torch.unique(items, return_inverse=True)
    content = model.item_tower.content({k: v[uniq] for k, v in table.items()})[inv]
    if clock is None or model.item_tower.time is None:
        return model.item_tower.combine(content, None), content
    time = _pair_time(clock, items, days, table["ids"].shape[0])
    return model.item_tower.combine(content, time), content


def batch_loss(
    model: TwoTower,
    table: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    logq: torch.Tensor,
    clock: ItemClock | None = None,
    listed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax of one batch. With a `clock`, every item carries its popularity as of
    the day of the example it is scored for: history and negatives at their example's day,
    and each in-batch positive at the day of every row it is a candidate for (never a later
    one). `listed`: each id's first_seen day (NaN unknown), so an item listed after a row's
    moment is no negative for it."""
    hist, pos, neg = b["history"], b["positive"], b["negatives"]
    B, L = hist.shape
    K = neg.shape[1]
    day = torch.div(b["ts"], DAY_US, rounding_mode="floor")
    items = torch.cat([hist.reshape(-1), pos, neg.reshape(-1)])
    days = torch.cat([day.repeat_interleave(L), day, day.repeat_interleave(K)])
    vecs, content = _batch_item_vectors(model, table, items, days, clock)
    hist_emb = vecs[: B * L].view(B, L, -1)
    n = vecs[B * L + B :].view(B, K, -1)
    u = model.user_tower(hist_emb, (hist > 0).to(hist_emb.dtype), b["device"], b["hour"])
    t = model.temperature
    timed = clock is not None and model.item_tower.time is not None
    if timed:
        # Row i scores positive j with j's popularity as of day i: one lookup per distinct
        # day of the batch (a few dozen at most) times the positives.
        batch_days, day_of_row = torch.unique(day, return_inverse=True)
        grid = _pair_time(clock, pos.repeat(len(batch_days)), batch_days.repeat_interleave(B), table["ids"].shape[0])
        beta = model.item_tower.popularity(grid).view(len(batch_days), B)[day_of_row]
        dots = scores_at(u.float(), F.normalize(content[B * L : B * L + B], dim=-1).float(), beta.float())
    else:
        dots = u @ vecs[B * L : B * L + B].T
    # In-batch candidates are the batch's positives, sampled ~ train frequency: logQ.
    in_batch = dots.float() / t - logq[pos][None, :]
    accidental = (pos[None, :] == pos[:, None]) & ~torch.eye(B, dtype=torch.bool, device=pos.device)
    explicit_off = (neg == 0) | (neg == pos[:, None])
    if timed and listed is not None:
        # An item listed after the example's moment was never a choice then. With time
        # features such negatives (no positives yet, age 0) teach "new means wrong", which
        # buries exactly the new listings a marketplace must surface.
        now = b["ts"].double() / DAY_US
        accidental |= (listed[pos][None, :] > now[:, None]) & ~torch.eye(B, dtype=torch.bool, device=pos.device)
        explicit_off |= listed[neg] > now[:, None]
    in_batch = in_batch.masked_fill(accidental, _NEG)
    explicit = torch.einsum("bd,bkd->bk", u, n).float() / t
    explicit = explicit.masked_fill(explicit_off, _NEG)
    logits = torch.cat([in_batch, explicit], dim=1)
    per_row = F.cross_entropy(logits, torch.arange(B, device=pos.device), reduction="none")
    w = b["weight"].float()
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


def _first_rows(ex: Examples) -> tuple[np.ndarray, np.ndarray]:
    """Per user: the row of their first example (by timestamp) and the user code."""
    order = np.lexsort((np.arange(len(ex)), ex.ts))
    users, first = np.unique(ex.user[order], return_index=True)
    return order[first], users


def ranking_metrics(top_codes: np.ndarray, target_codes: np.ndarray, n_targets: np.ndarray) -> dict[str, float]:
    """`top_codes` [U, k]: ranked (user_row * C + candidate column) codes; `target_codes`:
    the relevant pairs in the same coding; `n_targets` [U]: relevant candidates per user."""
    hits = np.isin(top_codes, target_codes)
    k = top_codes.shape[1]
    disc = 1.0 / np.log2(np.arange(k) + 2)
    recall = hits.sum(1) / n_targets
    idcg = np.cumsum(disc)[np.minimum(n_targets, k) - 1]
    ndcg = (hits * disc).sum(1) / idcg
    return {f"recall@{K_EVAL}": float(recall.mean()), f"ndcg@{K_EVAL}": float(ndcg.mean())}


class Evaluator:
    """Validation Recall/NDCG@20 by full ranking over active items, for the model and for
    the popularity baseline (rank by train_count), on the same users and targets."""

    def __init__(
        self, val: Examples, items: pa.Table, features: ItemFeatures, popularity: np.ndarray, max_users: int, seed: int
    ):
        active = (
            items.column("active").to_numpy(zero_copy_only=False).astype(bool)
            if "active" in items.column_names
            else np.ones(items.num_rows, bool)
        )
        cand = features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))[active]
        self.cand = np.unique(cand[cand > 0])
        col_of = np.full(features.n_ids, -1, dtype=np.int64)
        col_of[self.cand] = np.arange(len(self.cand))
        C = len(self.cand)
        rows, users = _first_rows(val)
        tcols = col_of[val.positive]
        ok = tcols >= 0
        # Users whose validation targets include at least one rankable (active) item.
        Cs = max(C, 1)
        pairs = np.unique(val.user[ok] * Cs + tcols[ok])
        rows, users = rows[np.isin(users, pairs // Cs)], users[np.isin(users, pairs // Cs)]
        if len(users) > max_users:
            pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
            rows, users = rows[pick], users[pick]
        self.rows = rows
        self.n_users = len(users)
        sel = np.isin(pairs // Cs, users)
        ucode = np.searchsorted(users, pairs[sel] // Cs)  # users is sorted (np.unique)
        self.codes = ucode * Cs + pairs[sel] % Cs
        self.n_targets = np.bincount(ucode, minlength=len(users))
        self.C = Cs
        self.val = val
        self.pop_scores = popularity[self.cand].astype(np.float64)

    def _metrics(self, top: np.ndarray) -> dict[str, float]:
        if self.n_users == 0:
            return {f"recall@{K_EVAL}": float("nan"), f"ndcg@{K_EVAL}": float("nan")}
        codes = np.arange(self.n_users)[:, None] * self.C + top
        return ranking_metrics(codes, self.codes, self.n_targets)

    @torch.no_grad()
    def model_metrics(
        self,
        model: TwoTower,
        table: dict[str, torch.Tensor],
        time: torch.Tensor | None = None,
        chunk: int = 2048,
        unknown_context: bool = False,
    ) -> dict[str, float]:
        """Recall/NDCG@20 of `model` with item vectors as of the start of the split
        (`time`: `time_table` on that day); `unknown_context` scores every user with the
        unknown device and hour (a request that gives neither)."""
        k = min(K_EVAL, len(self.cand))
        if self.n_users == 0 or k == 0:
            return self._metrics(np.zeros((0, K_EVAL), np.int64))
        dev = table["ids"].device
        vecs = all_item_vectors(model, table, time)
        cand = vecs[torch.from_numpy(self.cand).to(dev)]
        was = model.training
        model.eval()
        tops = []
        for lo in range(0, self.n_users, chunk):
            r = self.rows[lo : lo + chunk]
            hist = torch.from_numpy(self.val.history[r]).to(dev)
            device, hour = self.val.device[r], self.val.hour[r]
            if unknown_context:
                device, hour = np.full_like(device, UNKNOWN_DEVICE), np.full_like(hour, UNKNOWN_HOUR)
            u = model.user_tower(
                vecs[hist],
                (hist > 0).float(),
                torch.from_numpy(device).to(dev),
                torch.from_numpy(hour).to(dev),
            ).float()
            tops.append(torch.topk(u @ cand.T, k, dim=1).indices.cpu().numpy())
        model.train(was)
        return self._metrics(np.concatenate(tops))

    def popularity_metrics(self) -> dict[str, float]:
        k = min(K_EVAL, len(self.cand))
        top = np.argsort(-self.pop_scores, kind="stable")[:k]
        return self._metrics(np.broadcast_to(top, (self.n_users, k)))


def _popularity(features: ItemFeatures, items: pa.Table, train: Examples) -> np.ndarray:
    """train_count per id index: the items column when present, else counted from train."""
    counts = np.zeros(features.n_ids, dtype=np.float64)
    if "train_count" in items.column_names:
        idx = features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))
        tc = np.nan_to_num(items.column("train_count").to_numpy(zero_copy_only=False).astype(float))
        counts[idx[idx > 0]] = tc[idx > 0]
    else:
        np.add.at(counts, train.positive, 1.0)
    return counts


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint


def _load_checkpoint(path: Path, cfg: TrainConfig, features: ItemFeatures) -> dict | None:
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=True)
    old = ck.get("config", {})
    diff = {k: (old.get(k), getattr(cfg, k)) for k in _RESUME_KEYS if old.get(k) != getattr(cfg, k)}
    if diff or ck.get("features") != features.to_json():
        log.warning("checkpoint %s does not match this run (%s); starting fresh", path, diff or "features changed")
        return None
    return ck


@contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    prev, prev_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if on and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def train_two_tower(
    train: pa.Table,
    validation: pa.Table,
    items: pa.Table,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Fit features on `items`, train (resuming `checkpoint_dir/checkpoint.pt` when
    `cfg.resume`), keep the best epoch by validation Recall@20; see CONTRACTS `training`."""
    with _deterministic(cfg.deterministic):
        return _train(train, validation, items, cfg, Path(checkpoint_dir), on_epoch)


@dataclass
class _Inputs:
    """Everything fixed for the whole run: encoded examples, features, the evaluator."""

    device: torch.device
    features: ItemFeatures
    train: Examples
    validation: Examples
    table: dict[str, torch.Tensor]
    logq: torch.Tensor
    evaluator: Evaluator
    load_seconds: float
    clock: ItemClock | None  # None: the tower has no time-aware part
    eval_time: torch.Tensor | None  # time features on the validation split's first day
    listed: torch.Tensor | None  # first_seen day per id (NaN unknown), on the device


@dataclass
class TrainState:
    """What a checkpoint carries besides the model and optimizer."""

    epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    finished: bool = False


@dataclass
class _Timing:
    load_s: float = 0.0
    compute_s: float = 0.0
    train_s: float = 0.0
    examples: int = 0


def _prepare_inputs(train: pa.Table, validation: pa.Table, items: pa.Table, cfg: TrainConfig) -> _Inputs:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    features = ItemFeatures.fit(items, n_buckets=cfg.title_buckets)
    tr = encode_examples(train, features, cfg.history_len)
    va = encode_examples(validation, features, cfg.history_len)
    if cfg.epochs > 0 and len(tr) == 0:
        raise DataError("the train split is empty")
    table = item_feature_table(features, items, device)
    popularity = _popularity(features, items, tr)
    # logQ: in-batch candidates appear with probability ~ their share of train positives.
    freq = np.bincount(tr.positive, minlength=features.n_ids).astype(np.float64) + 1.0
    logq = torch.from_numpy(np.log(freq / freq.sum())).float().to(device)
    evaluator = Evaluator(va, items, features, popularity, cfg.max_eval_users, cfg.seed)
    clock = eval_time = listed = None
    if cfg.time_features:
        # keep_last is the refit, whose validation split is inside its train split: count it once.
        clock = item_clock(features, items, [tr] if cfg.keep_last else [tr, va])
        start = int(day_of(va.ts.min())) if len(va) else int(day_of(tr.ts.max())) + 1 if len(tr) else 0
        eval_time = time_table(clock, features.n_ids, start, device)
        listed = torch.from_numpy(clock.first_day).to(device)
    return _Inputs(device, features, tr, va, table, logq, evaluator, time.perf_counter() - t0, clock, eval_time, listed)


def item_clock(features: ItemFeatures, items: pa.Table, splits: list[Examples]) -> ItemClock:
    """The positives of `splits` by (item, day), with first_seen from `items` per id index.
    Features read only days before the one asked, so later splits never leak into earlier
    examples."""
    idx = features.item_index(items.column("item_id").to_numpy(zero_copy_only=False))
    first = first_seen_by_index(idx, items, features.n_ids)
    pos = np.concatenate([s.positive for s in splits]) if splits else np.zeros(0, np.int64)
    ts = np.concatenate([s.ts for s in splits]) if splits else np.zeros(0, np.int64)
    return ItemClock.fit(pos, ts, first)


def _restore(path: Path, cfg: TrainConfig, features: ItemFeatures, model: TwoTower, opt) -> TrainState:
    ck = _load_checkpoint(path, cfg, features) if cfg.resume else None
    if ck is None:
        return TrainState()
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["rng"]["torch"])
    log.info("resuming from %s after epoch %d", path, ck["epoch"])
    return TrainState(**{f.name: ck[f.name] for f in fields(TrainState)})


def _checkpoint(path: Path, state: TrainState, model: TwoTower, opt, cfg: TrainConfig, features: ItemFeatures) -> None:
    _save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            # Not asdict(state): it would deep-copy the best weights on every epoch.
            **{f.name: getattr(state, f.name) for f in fields(state)},
            "config": asdict(cfg),
            "features": features.to_json(),
            "rng": {"torch": torch.get_rng_state()},
        },
    )


def _run_epoch(model: TwoTower, opt, inp: _Inputs, cfg: TrainConfig, epoch: int, timing: _Timing) -> dict:
    """One pass over the train split; returns the epoch's history row (validation included)."""
    # Seeds derive from (seed, epoch) so a resumed epoch replays exactly.
    torch.manual_seed(cfg.seed * 1000 + epoch)
    model.train()
    use_amp = cfg.amp and inp.device.type == "cuda"
    t0, data_s, losses, weights = time.perf_counter(), 0.0, 0.0, 0
    it = iterate_batches(
        inp.train,
        cfg.batch_size,
        inp.device,
        shuffle=True,
        seed=cfg.seed * 1000 + epoch,
        context_dropout=cfg.context_dropout,
    )
    while True:
        td = time.perf_counter()
        b = next(it, None)
        data_s += time.perf_counter() - td
        if b is None:
            break
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = batch_loss(model, inp.table, b, inp.logq, inp.clock, inp.listed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses += float(loss.detach()) * len(b["positive"])
        weights += len(b["positive"])
    if inp.device.type == "cuda":
        torch.cuda.synchronize()
    epoch_s = time.perf_counter() - t0
    timing.load_s += data_s
    timing.compute_s += epoch_s - data_s
    timing.train_s += epoch_s
    timing.examples += len(inp.train)
    m = inp.evaluator.model_metrics(model, inp.table, inp.eval_time)
    return {
        "epoch": epoch,
        "train_loss": losses / max(weights, 1),
        "val_recall@20": m[f"recall@{K_EVAL}"],
        "val_ndcg@20": m[f"ndcg@{K_EVAL}"],
        "seconds": epoch_s,
        "examples_per_s": len(inp.train) / epoch_s if epoch_s > 0 else float("nan"),
    }


def _advance(state: TrainState, row: dict, model: TwoTower, patience: int, epochs: int) -> None:
    """Record the epoch, keep the best weights, decide whether to stop."""
    state.epoch = row["epoch"]
    state.history.append(row)
    if row["val_recall@20"] > state.best_metric:
        state.best_metric, state.best_epoch, state.bad_epochs = row["val_recall@20"], row["epoch"], 0
        state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    else:
        state.bad_epochs += 1
    state.finished = state.bad_epochs >= patience or state.epoch >= epochs


def _final_metrics(model: TwoTower, inp: _Inputs, state: TrainState) -> dict:
    m = inp.evaluator.model_metrics(model, inp.table, inp.eval_time)
    no_context = inp.evaluator.model_metrics(model, inp.table, inp.eval_time, unknown_context=True)
    pop = inp.evaluator.popularity_metrics()
    return {
        "val_recall@20": m[f"recall@{K_EVAL}"],
        "val_ndcg@20": m[f"ndcg@{K_EVAL}"],
        "val_recall@20_unknown_context": no_context[f"recall@{K_EVAL}"],
        "val_recall@20_popularity": pop[f"recall@{K_EVAL}"],
        "val_ndcg@20_popularity": pop[f"ndcg@{K_EVAL}"],
        "val_users": inp.evaluator.n_users,
        "train_examples": len(inp.train),
        "validation_examples": len(inp.validation),
        "n_items": inp.features.n_ids - 1,
        "active_items": int(len(inp.evaluator.cand)),
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
    }


def _train(
    train: pa.Table,
    validation: pa.Table,
    items: pa.Table,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    on_epoch: Callable[[int, dict], None] | None,
) -> TrainResult:
    inp = _prepare_inputs(train, validation, items, cfg)
    seed_everything(cfg.seed)
    model = build_model(
        inp.features,
        dim=cfg.dim,
        id_dropout=cfg.id_dropout,
        temperature=cfg.temperature,
        n_time=N_TIME_FEATURES if cfg.time_features else 0,
    )
    model = model.to(inp.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ck_path = checkpoint_dir / CHECKPOINT
    state = _restore(ck_path, cfg, inp.features, model, opt)
    resumed_from = state.epoch
    timing = _Timing(load_s=inp.load_seconds)
    while state.epoch < cfg.epochs and not state.finished:
        row = _run_epoch(model, opt, inp, cfg, state.epoch + 1, timing)
        _advance(state, row, model, cfg.patience, cfg.epochs)
        _checkpoint(ck_path, state, model, opt, cfg, inp.features)
        if on_epoch is not None:
            on_epoch(state.epoch, row)
    if state.best_state is not None and not cfg.keep_last:
        model.load_state_dict(state.best_state)
    model.eval()
    return TrainResult(
        model=model,
        features=inp.features,
        epochs_run=len(state.history),
        best_epoch=state.epoch if cfg.keep_last else state.best_epoch,
        history=state.history,
        final_metrics=_final_metrics(model, inp, state),
        examples_per_s=timing.examples / timing.train_s if timing.train_s > 0 else 0.0,
        device=str(inp.device),
        load_seconds=timing.load_s,
        compute_seconds=timing.compute_s,
        resumed_from_epoch=resumed_from,
    )
