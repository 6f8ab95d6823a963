"""The item table of a bundle as plain numpy arrays, for per-request work without pandas.

Row order is the embedding row order and the FAISS id space (CONTRACTS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recsys_dagster.contract import CATEGORY_SEPARATOR

HYDRATED_FIELDS = ("title", "price", "category_path", "condition", "location", "image_url")
_REQUIRED = ("item_id", "active", *HYDRATED_FIELDS)


class CatalogError(ValueError):
    """items.parquet or popular.json does not match the contract."""


@dataclass(frozen=True)
class Catalog:
    item_id: np.ndarray  # object[str]
    title: np.ndarray
    price: np.ndarray  # float64, NaN when unknown
    category_path: np.ndarray
    condition: np.ndarray
    location: np.ndarray
    image_url: np.ndarray
    active: np.ndarray  # bool
    leaf: np.ndarray  # int32 code of the leaf category (diversity)
    row_of: dict[str, int]
    popular_rows: np.ndarray  # int64, active items by popularity, best first
    popular_scores: np.ndarray  # float64, aligned with popular_rows
    popularity_norm: np.ndarray  # float64 per row in [0, 1]: log1p(score) / max

    @property
    def n_items(self) -> int:
        return int(self.item_id.shape[0])

    def rows_of(self, item_ids: list[str]) -> tuple[list[int], list[str]]:
        """Rows of the known ids (in order) and the unknown ids."""
        rows, unknown = [], []
        for i in item_ids:
            r = self.row_of.get(i)
            if r is None:
                unknown.append(i)
            else:
                rows.append(r)
        return rows, unknown

    def hydrate(self, rows: np.ndarray | list[int], scores: np.ndarray | list[float]) -> list[dict[str, Any]]:
        out = []
        for r, s in zip(rows, scores):
            price = float(self.price[r])
            out.append(
                {
                    "item_id": self.item_id[r],
                    "score": round(float(s), 6),
                    "title": self.title[r],
                    "price": None if price != price else price,
                    "category_path": self.category_path[r],
                    "condition": self.condition[r],
                    "location": self.location[r],
                    "image_url": self.image_url[r],
                }
            )
        return out


def _strings(table, name: str) -> np.ndarray:
    return np.array(table.column(name).to_pylist(), dtype=object)


def load_catalog(items_path: Path, popular_path: Path) -> Catalog:
    table = pq.read_table(items_path)
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise CatalogError(f"{items_path.name} lacks columns {missing}")
    table = table.select(list(_REQUIRED))
    item_id = _strings(table, "item_id")
    row_of = {iid: r for r, iid in enumerate(item_id)}
    if len(row_of) != len(item_id):
        raise CatalogError(f"{items_path.name} has duplicate item_id values")
    if any(v is None for v in item_id):
        raise CatalogError(f"{items_path.name} has null item_id values")
    category_path = np.array(["" if v is None else v for v in table.column("category_path").to_pylist()], dtype=object)
    leaves = np.array([p.rsplit(CATEGORY_SEPARATOR, 1)[-1] for p in category_path], dtype=object)
    _, leaf = np.unique(leaves, return_inverse=True) if len(leaves) else (None, np.zeros(0, np.int64))
    active = table.column("active").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    price = table.column("price").cast("float64").fill_null(float("nan")).to_numpy(zero_copy_only=False)

    popular = json.loads(popular_path.read_text())
    entries = popular.get("items") if isinstance(popular, dict) else None
    if not isinstance(entries, list):
        raise CatalogError(f"{popular_path.name} needs an 'items' list")
    pop_rows, pop_scores = [], []
    scores = np.zeros(len(item_id), dtype=np.float64)
    for e in entries:
        r = row_of.get(e.get("item_id")) if isinstance(e, dict) else None
        # popular.json lists active items; an id missing from items.parquet cannot be served.
        if r is None or not active[r]:
            continue
        s = float(e.get("score", 0.0))
        pop_rows.append(r)
        pop_scores.append(s)
        scores[r] = max(s, 0.0)
    logp = np.log1p(scores)
    top = float(logp.max()) if logp.size else 0.0
    return Catalog(
        item_id=item_id,
        title=_strings(table, "title"),
        price=price,
        category_path=category_path,
        condition=_strings(table, "condition"),
        location=_strings(table, "location"),
        image_url=_strings(table, "image_url"),
        active=active,
        leaf=leaf.astype(np.int32),
        row_of=row_of,
        popular_rows=np.array(pop_rows, dtype=np.int64),
        popular_scores=np.array(pop_scores, dtype=np.float64),
        popularity_norm=logp / top if top > 0 else logp,
    )
