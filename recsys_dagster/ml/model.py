"""The two-tower model: an item tower over id + content and a user tower over the item
vectors of a history plus context (device, hour).

The user tower takes item *vectors*, not ids, so serving can feed it any item (including
one created after training) from `item_embeddings.npy`; it is exported to ONNX alone.
The item tower adds a time-aware part: the item's popularity in recent windows before the
moment it is scored at, and its age (`ml/popularity.py`), mapped to one bounded scalar
beta in (-1, 1) that takes the vector's last coordinate: [sqrt(1 - beta^2) * content, beta],
unit norm by construction. The user tower's last coordinate learns how much popularity
counts. Adding a time vector to the content instead collapsed items of equal popularity
(all new listings alike) and lost half the recall on them. The content part runs once per
distinct item in a batch, the time part per (day, item) pair.

Device and hour each have an "unknown" row (`UNKNOWN_DEVICE`, `UNKNOWN_HOUR`), trained by
the context dropout of `ml/train.py`, which serving uses when a request omits them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_dagster.contract import DEVICE_TYPES

UNKNOWN_DEVICE = len(DEVICE_TYPES)  # contract: 3
UNKNOWN_HOUR = 24  # hours 0..23 UTC, 24 = unknown
N_DEVICES = UNKNOWN_DEVICE + 1
N_HOURS = UNKNOWN_HOUR + 1
ITEM_FEATURES = ("ids", "tokens", "l1", "l2", "path", "brand", "price", "condition", "city")


def _mlp(d_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


class ItemTower(nn.Module):
    def __init__(
        self,
        n_ids: int,
        n_buckets: int,
        sizes: dict[str, int],
        dim: int = 64,
        id_dropout: float = 0.3,
        n_time: int = 0,
    ):
        """`sizes`: embedding table sizes (index 0 included) for l1, l2, path, brand, price,
        condition, city. `n_buckets`: title hash buckets (token ids 1..n_buckets, 0 = pad)."""
        super().__init__()
        self.id_dropout = id_dropout
        # padding_idx=0: unknown / dropped ids contribute a zero vector, never trained,
        # so the tower learns to stand on content alone for them.
        self.id_emb = nn.Embedding(n_ids, dim, padding_idx=0)
        self.title = nn.EmbeddingBag(n_buckets + 1, dim, mode="mean", padding_idx=0)
        self.cats = nn.ModuleDict(
            {k: nn.Embedding(sizes[k], dim // 2, padding_idx=0) for k in ("l1", "l2", "path", "brand")}
        )
        self.small = nn.ModuleDict({k: nn.Embedding(sizes[k], dim // 4 or 1) for k in ("price", "condition", "city")})
        d_in = dim * 2 + 4 * (dim // 2) + 3 * (dim // 4 or 1)
        self.dim = dim
        self.n_time = n_time
        # With a time part the content takes dim - 1 coordinates and the popularity one.
        self.mlp = _mlp(d_in, dim - 1 if n_time else dim)
        self.time = nn.Sequential(nn.Linear(n_time, 16), nn.GELU(), nn.Linear(16, 1)) if n_time else None

    def forward(self, f: dict[str, torch.Tensor], time: torch.Tensor | None = None) -> torch.Tensor:
        """Unit item vectors; `time` [N, n_time]: the items' time features, required when
        the tower has a time part (never silently zero: zero means "new listing")."""
        return self.combine(self.content(f), time)

    def combine(self, content: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
        content = F.normalize(content, dim=-1)
        if self.time is None:
            return content
        if time is None:
            raise ValueError("this item tower is time-aware: give the items' time features")
        beta = self.popularity(time)
        return torch.cat([content * _keep(beta), beta], dim=-1)

    def popularity(self, time: torch.Tensor) -> torch.Tensor:
        """beta in (-1, 1) per row of time features, [N, 1]: the vector's last coordinate."""
        return torch.tanh(self.time(time.float()))

    def content(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unnormalised id + content part."""
        ids = f["ids"]
        if self.training and self.id_dropout > 0:
            keep = torch.rand(ids.shape, device=ids.device) >= self.id_dropout
            ids = ids * keep
        parts = [self.id_emb(ids), self.title(f["tokens"])]
        parts += [self.cats[k](f[k]) for k in ("l1", "l2", "path", "brand")]
        parts += [self.small[k](f[k]) for k in ("price", "condition", "city")]
        return self.mlp(torch.cat(parts, dim=-1))


def _keep(beta: torch.Tensor) -> torch.Tensor:
    """How much of the unit content vector a popularity coordinate beta leaves: the vector
    [_keep(beta) * content, beta] has norm 1."""
    return torch.sqrt((1 - beta * beta).clamp_min(1e-6))


def scores_at(user: torch.Tensor, content: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """user [B, D] · item [j] as `ItemTower.combine` builds it, with item j's popularity
    beta[i, j] as of row i's moment: [B, B']. `content` [B', D-1] unit vectors."""
    return _keep(beta) * (user[:, :-1] @ content.T) + user[:, -1:] * beta


class UserTower(nn.Module):
    """Attention pooling with a learned recency decay over history item vectors, beside a
    plain mean of the whole history, plus device/hour embeddings. Works for any history
    length L (no positional table).

    The mean keeps every item of a long history in view: a recency-decayed softmax alone
    collapses onto the last few items, while item-item models win by using all of them."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.zeros(dim))
        # softplus(-3) ~ 0.05 per position: the 20th item back still weighs ~e^-1 at the start.
        self.decay = nn.Parameter(torch.tensor(-3.0))
        self.device_emb = nn.Embedding(N_DEVICES, dim // 4 or 1)
        self.hour_emb = nn.Embedding(N_HOURS, dim // 4 or 1)
        self.mlp = _mlp(2 * dim + 2 * (dim // 4 or 1) + 1, dim)

    def forward(
        self,
        history_emb: torch.Tensor,
        history_mask: torch.Tensor,
        device: torch.Tensor,
        hour: torch.Tensor,
    ) -> torch.Tensor:
        L = history_emb.shape[1]
        mask = history_mask.to(history_emb.dtype)
        # Histories are right-aligned (left-padded): age 0 = the most recent slot.
        age = torch.arange(L - 1, -1, -1, device=history_emb.device, dtype=history_emb.dtype)
        logits = torch.tanh(self.key(history_emb)) @ self.query - F.softplus(self.decay) * age
        logits = logits.masked_fill(mask <= 0, -1e4)
        weights = torch.softmax(logits, dim=-1) * mask  # all-masked row -> zeros, not NaN
        pooled = (weights.unsqueeze(-1) * history_emb).sum(dim=1)
        count = mask.sum(dim=1, keepdim=True)
        mean = (mask.unsqueeze(-1) * history_emb).sum(dim=1) / count.clamp_min(1.0)
        has_history = (count > 0).to(pooled.dtype)
        x = torch.cat(
            [
                pooled,
                mean,
                self.device_emb(device.clamp(0, N_DEVICES - 1)),
                self.hour_emb(hour.clamp(0, N_HOURS - 1)),
                has_history,
            ],
            dim=-1,
        )
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, item_tower: ItemTower, user_tower: UserTower, temperature: float = 0.05):
        super().__init__()
        self.item_tower = item_tower
        self.user_tower = user_tower
        # Fixed: a learnable temperature with logQ correction tends to drift; keep it a config.
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @property
    def dim(self) -> int:
        return self.item_tower.dim

    def forward(
        self,
        history_emb: torch.Tensor,
        history_mask: torch.Tensor,
        device: torch.Tensor,
        hour: torch.Tensor,
    ) -> torch.Tensor:
        return self.user_tower(history_emb, history_mask, device, hour)


def build_model(
    features, dim: int = 64, id_dropout: float = 0.3, temperature: float = 0.05, n_time: int = 0
) -> TwoTower:
    """A fresh TwoTower sized by an `ItemFeatures`; `n_time` time features (0 = none)."""
    sizes = {k: features.vocab_size(k) for k in ("l1", "l2", "path", "brand", "condition", "city")}
    sizes["price"] = features.n_price
    item = ItemTower(features.n_ids, features.n_buckets, sizes, dim=dim, id_dropout=id_dropout, n_time=n_time)
    return TwoTower(item, UserTower(dim), temperature=temperature)
