"""Item content features: vocabularies and hashing fitted on the `items` table.

Saved as `features.json` (no pickle) and re-applied to any later items table, so an item
never seen in training still gets content features. Index 0 of every vocabulary means
padding / unknown. Title tokens are hashed with crc32 (stable across processes, unlike
Python's salted `hash`).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_dagster.contract import CATEGORY_SEPARATOR, UNKNOWN

FEATURES_FORMAT = 1
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)

# Categorical fields of the item tower: name -> vocabulary attribute.
CATEGORICAL = ("l1", "l2", "path", "brand", "condition", "city")


class FeatureError(ValueError):
    """The items table or a features.json does not fit what the item tower needs."""


def title_tokens(title: str, n_buckets: int, max_tokens: int) -> list[int]:
    """Hashed ids (1..n_buckets) of the lowercase word tokens, first occurrence order."""
    out: list[int] = []
    seen: set[int] = set()
    for tok in _TOKEN_RE.findall(title.lower()):
        b = zlib.crc32(tok.encode("utf-8")) % n_buckets + 1
        if b not in seen:
            seen.add(b)
            out.append(b)
            if len(out) == max_tokens:
                break
    return out


REQUIRED = ("item_id", "title", "category_path", "price", "brand", "location", "condition")


def _check_columns(items: pa.Table) -> None:
    missing = [c for c in REQUIRED if c not in items.column_names]
    if missing:
        raise FeatureError(
            f"items table has no column {missing[0]!r} (missing {missing}; columns: {items.column_names})"
        )


def _column(items: pa.Table, name: str) -> np.ndarray:
    if name not in items.column_names:
        raise FeatureError(f"items table has no column {name!r} (columns: {items.column_names})")
    return items.column(name).to_pandas().to_numpy()


def _strings(items: pa.Table, name: str) -> np.ndarray:
    """A string column with nulls as '' (an empty value maps to index 0, i.e. unknown)."""
    s = pd.Series(_column(items, name), dtype=object).fillna("").astype(str).str.strip()
    return s.to_numpy(dtype=object)


def _categories(items: pa.Table, name: str) -> np.ndarray:
    """A categorical column: null, '' and the explicit `unknown` all map to index 0."""
    values = _strings(items, name)
    values[values == UNKNOWN] = ""
    return values


def _category_levels(items: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l1, 'l1>l2', full path) from category_l1/l2 when present, else split category_path."""
    path = _categories(items, "category_path")
    if "category_l1" in items.column_names and "category_l2" in items.column_names:
        l1 = _categories(items, "category_l1")
        l2 = _categories(items, "category_l2")
    else:
        parts = pd.Series(path).str.split(CATEGORY_SEPARATOR.strip(), regex=False)
        l1 = parts.str[0].fillna("").str.strip().to_numpy(dtype=object)
        l2 = parts.str[1].fillna("").str.strip().to_numpy(dtype=object)
    l12 = np.where(l2 == "", l1, l1 + ">" + l2).astype(object)
    l12[l1 == ""] = ""
    return l1, l12, path


def _lookup(vocab: list[str], values: np.ndarray) -> np.ndarray:
    """Vectorised value -> index+1; unknown or empty -> 0."""
    idx = pd.Index(vocab).get_indexer(values)
    return (idx + 1).astype(np.int64)


def _vocab(values: np.ndarray) -> list[str]:
    return sorted({v for v in values.tolist() if v != ""})


@dataclass
class ItemArrays:
    """Per-row int64 feature arrays of one items table (row i = the table's row i)."""

    ids: np.ndarray  # [N] id vocabulary index, 0 = unknown
    tokens: np.ndarray  # [N, T] hashed title tokens, 0-padded on the right
    l1: np.ndarray
    l2: np.ndarray
    path: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    condition: np.ndarray
    city: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ItemFeatures:
    item_ids: list[str]
    n_buckets: int
    max_tokens: int
    price_edges: list[float]  # inner edges of log1p(price) quantile buckets
    vocabs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, items: pa.Table, n_buckets: int = 2**15, max_tokens: int = 16, n_price_buckets: int = 10
    ) -> ItemFeatures:
        _check_columns(items)
        ids = _strings(items, "item_id")
        if (ids == "").any():
            raise FeatureError(f"{int((ids == '').sum())} items have an empty item_id")
        if len(set(ids.tolist())) != len(ids):
            raise FeatureError("items table has duplicate item_id values")
        l1, l12, path = _category_levels(items)
        values = {
            "l1": l1,
            "l2": l12,
            "path": path,
            "brand": _categories(items, "brand"),
            "condition": _categories(items, "condition"),
            "city": _categories(items, "location"),
        }
        price = _prices(items)
        finite = price[np.isfinite(price)]
        if len(finite):
            qs = np.quantile(np.log1p(finite), np.linspace(0, 1, n_price_buckets + 1)[1:-1])
            edges = sorted(set(float(q) for q in qs))
        else:
            edges = []
        return cls(
            item_ids=ids.tolist(),
            n_buckets=n_buckets,
            max_tokens=max_tokens,
            price_edges=edges,
            vocabs={k: _vocab(v) for k, v in values.items()},
        )

    # Sizes of the embedding tables (including index 0).
    @property
    def n_ids(self) -> int:
        return len(self.item_ids) + 1

    @property
    def n_price(self) -> int:
        return len(self.price_edges) + 2  # 0 = missing price

    def vocab_size(self, name: str) -> int:
        return len(self.vocabs[name]) + 1

    def item_index(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Vectorised item_id -> id index (0 = unknown)."""
        return _lookup(self.item_ids, np.asarray(item_ids, dtype=object))

    def encode(self, items: pa.Table) -> ItemArrays:
        _check_columns(items)
        ids = _strings(items, "item_id")
        l1, l12, path = _category_levels(items)
        titles = _strings(items, "title")
        tokens = np.zeros((len(titles), self.max_tokens), dtype=np.int64)
        for i, t in enumerate(titles.tolist()):  # once per catalog, not per training step
            toks = title_tokens(t, self.n_buckets, self.max_tokens)
            tokens[i, : len(toks)] = toks
        price = _prices(items)
        price_idx = np.where(
            np.isfinite(price),
            np.searchsorted(np.asarray(self.price_edges), np.log1p(np.nan_to_num(price)), side="right") + 1,
            0,
        ).astype(np.int64)
        return ItemArrays(
            ids=self.item_index(ids),
            tokens=tokens,
            l1=_lookup(self.vocabs["l1"], l1),
            l2=_lookup(self.vocabs["l2"], l12),
            path=_lookup(self.vocabs["path"], path),
            brand=_lookup(self.vocabs["brand"], _categories(items, "brand")),
            price=price_idx,
            condition=_lookup(self.vocabs["condition"], _categories(items, "condition")),
            city=_lookup(self.vocabs["city"], _categories(items, "location")),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FEATURES_FORMAT,
                "hash": "crc32",
                "item_ids": self.item_ids,
                "n_buckets": self.n_buckets,
                "max_tokens": self.max_tokens,
                "price_edges": self.price_edges,
                "vocabs": self.vocabs,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ItemFeatures:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeatureError(f"features.json is not valid JSON: {exc}") from exc
        if obj.get("format") != FEATURES_FORMAT or obj.get("hash") != "crc32":
            raise FeatureError(f"unsupported features.json format {obj.get('format')!r}/{obj.get('hash')!r}")
        missing = set(CATEGORICAL) - set(obj.get("vocabs", {}))
        if missing:
            raise FeatureError(f"features.json lacks vocabularies {sorted(missing)}")
        return cls(
            item_ids=list(obj["item_ids"]),
            n_buckets=int(obj["n_buckets"]),
            max_tokens=int(obj["max_tokens"]),
            price_edges=[float(x) for x in obj["price_edges"]],
            vocabs={k: list(v) for k, v in obj["vocabs"].items()},
        )


def _prices(items: pa.Table) -> np.ndarray:
    """float64 prices; null or negative -> NaN (the 'missing price' bucket)."""
    p = pd.to_numeric(pd.Series(_column(items, "price")), errors="coerce").to_numpy(dtype=np.float64)
    return np.where(p >= 0, p, np.nan)
