"""The item table of a bundle as plain numpy arrays, for per-request work without pandas.

Row order is the embedding row order and the FAISS id space (CONTRACTS.md).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


class _SortedKeys:
    """A sorted Arrow string array as a sequence of str, for `bisect` (no Python copy)."""

    def __init__(self, keys: pa.StringArray | pa.LargeStringArray):
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> str:
        return self.keys[i].as_py()


@dataclass(frozen=True)
class SeenSets:
    """Per known user, the item rows serving never recommends again (`user_seen.parquet`).

    Compact for millions of users: one int32 array of item rows for everyone, in file order
    (ids not in the catalog dropped at load), and per user, in user-id order, where their
    rows start and how many there are; user ids stay one sorted Arrow string array, looked
    up by binary search. No Python object per user or per item.
    """

    users: pa.Array  # sorted, distinct user ids
    starts: np.ndarray  # int64 [n_users]: first row of user i in `rows`
    lengths: np.ndarray  # int64 [n_users]
    rows: np.ndarray  # int32 item rows, each user's most recent first

    BATCH_USERS = 32_768  # users read per Parquet batch: bounds the memory a load needs

    @classmethod
    def empty(cls) -> SeenSets:
        return cls(pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))

    @classmethod
    def from_table(cls, table: pa.Table, catalog_ids: np.ndarray) -> SeenSets:
        """`table`: user_id str, seen list<str> (CONTRACTS `user_seen`)."""
        return cls.from_batches(table.to_batches(max_chunksize=cls.BATCH_USERS), catalog_ids)

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch], catalog_ids: np.ndarray) -> SeenSets:
        catalog = pa.array(catalog_ids, pa.string())
        users: list[pa.Array] = [pa.array([], pa.string())]
        counts: list[np.ndarray] = [np.zeros(0, np.int64)]
        rows: list[np.ndarray] = [np.zeros(0, np.int32)]
        for batch in batches:
            missing = [c for c in ("user_id", "seen") if c not in batch.schema.names]
            if missing:
                raise CatalogError(f"user_seen.parquet lacks columns {missing}")
            valid = pc.is_valid(batch.column("user_id"))
            if pc.any(pc.invert(valid)).as_py():
                batch = batch.filter(valid)
            seen = batch.column("seen")
            lengths = pc.fill_null(pc.list_value_length(seen), 0).to_numpy(zero_copy_only=False).astype(np.int64)
            found = pc.index_in(pc.list_flatten(seen).cast(pa.string()), value_set=catalog)
            r = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            known = r >= 0
            owner = np.repeat(np.arange(batch.num_rows, dtype=np.int64), lengths)
            counts.append(np.bincount(owner[known], minlength=batch.num_rows).astype(np.int64))
            rows.append(r[known].astype(np.int32))
            users.append(batch.column("user_id").cast(pa.string()))
        all_users = pa.concat_arrays(users)
        n = np.concatenate(counts)
        first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        order = pc.sort_indices(all_users).to_numpy(zero_copy_only=False)
        sorted_users = all_users.take(pa.array(order))
        if len(sorted_users) > 1 and pc.any(pc.equal(sorted_users[1:], sorted_users[:-1])).as_py():
            raise CatalogError("user_seen.parquet has more than one row for a user")
        return cls(sorted_users, first[order], n[order], np.concatenate(rows))

    @property
    def n_users(self) -> int:
        return len(self.users)

    def rows_for(self, user_id: str) -> np.ndarray:
        """The user's seen item rows (int32, most recent first); empty for an unknown user."""
        i = bisect.bisect_left(_SortedKeys(self.users), user_id)
        if i < len(self.users) and self.users[i].as_py() == user_id:
            return self.rows[self.starts[i] : self.starts[i] + self.lengths[i]]
        return self.rows[:0]


def load_seen(path: Path, catalog: Catalog) -> SeenSets:
    """Seen-sets of a bundle, read batch by batch; a bundle written before
    `user_seen.parquet` existed has none."""
    if not path.is_file():
        return SeenSets.empty()
    file = pq.ParquetFile(path)
    missing = [c for c in ("user_id", "seen") if c not in file.schema_arrow.names]
    if missing:
        raise CatalogError(f"{path.name} lacks columns {missing}")
    batches = file.iter_batches(batch_size=SeenSets.BATCH_USERS, columns=["user_id", "seen"])
    return SeenSets.from_batches(batches, catalog.item_id)
