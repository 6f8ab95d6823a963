"""The listings: attributes as numpy columns (for fast choice in the session simulator)
plus each item's landing JSON line, built once when it is listed."""

from __future__ import annotations

import json

import numpy as np

from recsys_dagster.contract import CONDITIONS
from recsys_dagster.datagen.clock import MS_PER_DAY, iso_s
from recsys_dagster.datagen.taxonomy import CITIES, LEAVES, city_weights, leaf_weights

CURRENCY = "EUR"
IMAGE_HOST = "https://images.example.com/listings"

CONDITION_P = np.array([0.12, 0.33, 0.45, 0.10])
# Price relative to a like-new item, and how much a buyer likes the condition.
_CONDITION_PRICE = np.array([1.2, 1.0, 0.75, 0.3])
_CONDITION_APPEAL = np.array([1.2, 1.15, 1.0, 0.45])
# Popularity is a power law: appeal ~ Pareto(alpha), capped so no item owns a category.
PARETO_ALPHA = 1.3
_APPEAL_CAP = 80.0

_CONDITION_TEXT = {
    "new": ("Brand new, never used, still in the original packaging.", "New and unopened, unwanted gift."),
    "like_new": ("Like new, used only a few times.", "Excellent condition, no visible marks."),
    "used": (
        "Used, with normal signs of wear.",
        "Well used but works perfectly.",
        "A few scratches, fully functional.",
    ),
    "for_parts": ("Defective, sold for parts or repair.", "Not working, for spares only."),
}
_REASONS = (
    "Selling because I am moving.",
    "Upgraded, so this one has to go.",
    "Clearing out the flat.",
    "No longer needed.",
    "Bought the wrong size/model.",
    "",
)
_LOGISTICS = (
    "Pick-up in {city}.",
    "Pick-up in {city} or shipping at the buyer's cost.",
    "Shipping possible, pick-up in {city} preferred.",
    "Cash on pick-up in {city}.",
)


# Taste within a leaf: a buyer's favourite brand (Sony or Bose), or model where the leaf has
# one brand (iPhone 13 or 15); what makes their items look alike to item-kNN.
N_BRANDS = np.array([len(leaf.brands) for leaf in LEAVES])
FAMILIES = np.array([len(leaf.brands) if len(leaf.brands) > 1 else len(leaf.products) for leaf in LEAVES])


def _round_price(p: np.ndarray) -> np.ndarray:
    """Asking prices people type: halves under 20, whole euros, tens above 1000."""
    return np.where(p < 20, np.round(p * 2) / 2, np.where(p < 1000, np.round(p), np.round(p, -1)))


class Catalog:
    """Every item ever listed, indexed by its number (`i000042` is row 42)."""

    def __init__(self, capacity: int):
        self.n = 0
        self.leaf = np.zeros(capacity, dtype=np.int64)
        self.city = np.zeros(capacity, dtype=np.int64)
        self.condition = np.zeros(capacity, dtype=np.int64)
        self.price = np.zeros(capacity, dtype=np.float64)
        self.price_z = np.zeros(capacity, dtype=np.float64)  # log-price position within its leaf
        self.log_appeal = np.zeros(capacity, dtype=np.float64)
        self.family = np.zeros(capacity, dtype=np.int64)  # brand, or model in one-brand leaves (see FAMILIES)
        self.created_ms = np.zeros(capacity, dtype=np.int64)
        self.sold_day = np.full(capacity, -1, dtype=np.int64)  # day index it sold on; -1 listed
        self.lines: list[str] = []
        self.ids: list[str] = []

    @property
    def capacity(self) -> int:
        return self.leaf.shape[0]

    def add(self, rng: np.random.Generator, created_ms: np.ndarray) -> np.ndarray:
        """List new items created at `created_ms`; returns their row numbers."""
        k = len(created_ms)
        if self.n + k > self.capacity:
            raise ValueError(f"catalog capacity {self.capacity} exceeded")
        rows = np.arange(self.n, self.n + k)
        leaf = rng.choice(len(LEAVES), size=k, p=leaf_weights())
        cond = rng.choice(len(CONDITIONS), size=k, p=CONDITION_P)
        city = rng.choice(len(CITIES), size=k, p=city_weights())
        deal = rng.standard_normal(k)  # >0: asking more than the item is worth
        pick = rng.random((k, 4))  # product, brand, and variant choices
        sigma = np.array([LEAVES[lf].price_sigma for lf in leaf])
        n_products = np.array([len(LEAVES[lf].products) for lf in leaf])
        product = np.minimum((pick[:, 0] * n_products).astype(np.int64), n_products - 1)
        # Newer models (later in the list) ask up to ~1.8x older ones.
        model_mult = np.exp(0.6 * (product / np.maximum(n_products - 1, 1) - 0.5))
        median = np.array([LEAVES[lf].median_price for lf in leaf])
        price = _round_price(median * _CONDITION_PRICE[cond] * model_mult * np.exp(sigma * deal))
        price = np.maximum(price, 1.0)
        appeal = np.minimum((1.0 - rng.random(k)) ** (-1.0 / PARETO_ALPHA), _APPEAL_CAP)
        # A good deal (priced under its worth) and a better condition draw more interest.
        log_appeal = np.log(appeal * _CONDITION_APPEAL[cond]) - 0.35 * deal

        self.leaf[rows] = leaf
        self.city[rows] = city
        self.condition[rows] = cond
        self.price[rows] = price
        self.price_z[rows] = np.log(price / median) / sigma
        self.log_appeal[rows] = log_appeal
        self.family[rows] = np.where(
            N_BRANDS[leaf] > 1, (pick[:, 1] * N_BRANDS[leaf]).astype(np.int64) % N_BRANDS[leaf], product
        )
        self.created_ms[rows] = created_ms
        created_at = iso_s(created_ms)
        for j, row in enumerate(rows.tolist()):
            self.ids.append(item_key(row))
            self.lines.append(
                self._line(
                    rng,
                    row,
                    int(leaf[j]),
                    int(product[j]),
                    int(cond[j]),
                    int(city[j]),
                    float(price[j]),
                    pick[j],
                    created_at[j],
                )
            )
        self.n += k
        return rows

    @staticmethod
    def _line(
        rng: np.random.Generator,
        row: int,
        leaf_i: int,
        product_i: int,
        cond_i: int,
        city_i: int,
        price: float,
        pick: np.ndarray,
        created_at: str,
    ) -> str:
        leaf = LEAVES[leaf_i]
        brand = leaf.brands[int(pick[1] * len(leaf.brands)) % len(leaf.brands)]
        variants = " ".join(opts[int(rng.integers(len(opts)))] for opts in leaf.variants)
        title = leaf.template.format(brand=brand, product=leaf.products[product_i], variants=variants)
        condition = CONDITIONS[cond_i]
        city = CITIES[city_i].name
        texts = _CONDITION_TEXT[condition]
        parts = [
            f"{title}.",
            texts[int(rng.integers(len(texts)))],
            _REASONS[int(rng.integers(len(_REASONS)))],
            _LOGISTICS[int(rng.integers(len(_LOGISTICS)))].format(city=city),
        ]
        item_id = item_key(row)
        rec = {
            "item_id": item_id,
            "title": title,
            "description": " ".join(p for p in parts if p),
            "category_path": leaf.path,
            "price": price,
            "currency": CURRENCY,
            "brand": brand,
            "location": city,
            "condition": condition,
            "image_url": f"{IMAGE_HOST}/{item_id}/1.jpg",
            "created_at": created_at,
        }
        return json.dumps(rec, separators=(",", ":"))

    def snapshot(self, day: int, day_start: int) -> np.ndarray:
        """Rows in day `day`'s catalog file: listed and unsold at its start, or created during it."""
        n = self.n
        unsold = (self.sold_day[:n] < 0) | (self.sold_day[:n] >= day)
        return np.flatnonzero(unsold & (self.created_ms[:n] < day_start + MS_PER_DAY))


def item_key(row: int) -> str:
    return f"i{row:06d}"


def user_key(row: int) -> str:
    return f"u{row:06d}"
