"""Serving shortcuts against the plain versions they replace: the per-leaf diversity cap,
vectorised, and a source's top candidates read from a partial sort."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_dagster.serving.rerank import diversify


def reference(leaf: np.ndarray, rows: np.ndarray, k: int, cap: int, counts: dict, relax: bool) -> list[int]:
    picked, capped_out = [], []
    for i, r in enumerate(rows.tolist()):
        if len(picked) >= k:
            break
        if counts.get(leaf[r], 0) >= cap:
            capped_out.append(i)
            continue
        counts[leaf[r]] = counts.get(leaf[r], 0) + 1
        picked.append(i)
    if relax and len(picked) < k:
        for i in capped_out[: k - len(picked)]:
            counts[leaf[rows[i]]] = counts.get(leaf[rows[i]], 0) + 1
            picked.append(i)
    return rows[picked].tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=30),
    st.data(),
    st.integers(1, 12),
    st.integers(1, 4),
    st.dictionaries(st.integers(0, 4), st.integers(0, 4), max_size=3),
    st.booleans(),
)
def test_vectorised_cap_equals_the_loop(leaves, data, k, cap, held, relax):
    leaf = np.asarray(leaves, dtype=np.int32)
    rows = np.asarray(data.draw(st.permutations(range(len(leaves)))), dtype=np.int64)
    scores = -np.arange(len(rows), dtype=np.float64)
    catalog = SimpleNamespace(leaf=leaf)
    want_counts, got_counts = dict(held), dict(held)
    want = reference(leaf, rows, k, cap, want_counts, relax)
    got, got_scores = diversify(catalog, rows, scores, k, cap, got_counts, relax)
    assert got == want and got_counts == want_counts
    assert got_scores == [float(-rows.tolist().index(r)) for r in got]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 8), min_size=0, max_size=120),
    st.integers(1, 10),
    st.sets(st.integers(0, 119), max_size=60),
)
def test_source_top_with_a_partial_sort_equals_the_full_sort(score_levels, depth, dropped):
    """A source's best kept candidates (score descending, then row), reading only a head of
    a long list, with ties at its edge and filters that empty it."""
    from recsys_dagster.serving.ranker import _top

    n = len(score_levels)
    items = np.random.default_rng(n).permutation(1000)[:n].astype(np.int64)
    scores = np.asarray(score_levels, dtype=np.float64)
    drop = np.asarray(sorted(dropped), dtype=np.int64)

    def keep(rows: np.ndarray) -> np.ndarray:
        return ~np.isin(rows, items[drop[drop < n]])

    order = np.lexsort((items, -scores))
    want = items[order][keep(items[order])][:depth]
    np.testing.assert_array_equal(_top(items, scores, keep, depth), want)
