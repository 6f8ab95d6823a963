"""Item features, the two towers, item embeddings and the ONNX user tower (no training)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from synthetic import synthetic_tables

from recsys_dagster.ml.data import DataError, encode_examples, iterate_batches
from recsys_dagster.ml.embed import item_embeddings
from recsys_dagster.ml.export import INPUT_NAMES, OUTPUT_NAME, export_user_tower, verify_onnx
from recsys_dagster.ml.features import FeatureError, ItemFeatures, title_tokens
from recsys_dagster.ml.model import build_model

DIM = 16


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables(n_users=40, n_items=80, per_user=5, cold_items=8, seed=1)


@pytest.fixture(scope="module")
def features(tables):
    return ItemFeatures.fit(tables[2], n_buckets=256)


@pytest.fixture(scope="module")
def model(features):
    torch.manual_seed(0)
    return build_model(features, dim=DIM).eval()


def test_title_tokens_are_stable_hashes():
    a = title_tokens("iPhone 15 Pro, iPhone!", 1000, 8)
    assert a == title_tokens("IPHONE 15 pro iphone", 1000, 8)  # lowercase, deduplicated
    assert len(a) == 3 and all(1 <= t <= 1000 for t in a)
    assert title_tokens("", 1000, 8) == []


def test_features_json_round_trip_and_unknown_values(tables, features):
    items = tables[2]
    again = ItemFeatures.from_json(features.to_json())
    assert again == features
    a, b = features.encode(items).as_dict(), again.encode(items).as_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (a["ids"] == np.arange(1, items.num_rows + 1)).all()
    assert (a["l1"] > 0).all() and (a["price"] > 0).all() and (a["tokens"][:, 0] > 0).all()
    new = pa.table(
        {
            "item_id": ["never-seen"],
            "title": ["phone unknownword"],
            "category_path": ["Nowhere > Else"],
            "price": [None],
            "brand": ["nobrand"],
            "location": [None],
            "condition": ["new"],
        }
    )
    enc = again.encode(new)
    assert enc.ids[0] == 0 and enc.l1[0] == 0 and enc.path[0] == 0 and enc.brand[0] == 0
    assert enc.city[0] == 0 and enc.price[0] == 0 and enc.condition[0] > 0
    assert enc.tokens[0, :2].tolist() == title_tokens("phone unknownword", 256, 16)


def test_features_reject_bad_input(tables):
    items = tables[2]
    with pytest.raises(FeatureError, match="duplicate"):
        ItemFeatures.fit(pa.concat_tables([items, items.slice(0, 1)]))
    with pytest.raises(FeatureError, match="no column 'title'"):
        ItemFeatures.fit(items.drop_columns(["title"]))
    with pytest.raises(FeatureError, match="not valid JSON"):
        ItemFeatures.from_json("{nope")


def test_encode_examples_maps_lists_and_pads(tables, features):
    train = tables[0]
    ex = encode_examples(train, features, history_len=3)
    assert ex.history.shape == (train.num_rows, 3) and ex.negatives.shape == (train.num_rows, 5)
    hist = train.column("history").to_pylist()
    for row in (0, 1, 4):  # histories of length 0, 1 and >= 3
        want = [features.item_ids.index(x) + 1 for x in hist[row][-3:]]
        assert ex.history[row].tolist() == [0] * (3 - len(want)) + want  # left-padded, oldest first
    assert (ex.positive > 0).all() and (ex.device <= 3).all()
    bad = train.set_column(train.schema.get_field_index("item_id"), "item_id", pa.array(["ghost"] * train.num_rows))
    with pytest.raises(DataError, match="not in the items table"):
        encode_examples(bad, features, 3)
    batches = list(iterate_batches(ex, 64, torch.device("cpu"), seed=3))
    assert sum(len(b["positive"]) for b in batches) == len(ex)
    again = next(iterate_batches(ex, 64, torch.device("cpu"), seed=3))
    assert torch.equal(batches[0]["positive"], again["positive"])  # seeded shuffle


def test_towers_shapes_norms_and_empty_history(model):
    B, L = 4, 6
    hist = torch.nn.functional.normalize(torch.randn(B, L, DIM), dim=-1)
    mask = torch.ones(B, L)
    mask[0] = 0  # an empty history
    mask[1, :4] = 0
    with torch.no_grad():
        u = model.user_tower(hist, mask, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 5, 12, 23]))
    assert u.shape == (B, DIM) and torch.isfinite(u).all()
    torch.testing.assert_close(u.norm(dim=1), torch.ones(B))
    # Padding content does not leak into the user vector.
    hist2 = hist.clone()
    hist2[1, :4] = 7.0
    with torch.no_grad():
        u2 = model.user_tower(hist2, mask, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 5, 12, 23]))
    torch.testing.assert_close(u, u2)


def test_item_embeddings_cover_cold_and_unknown_items(model, features, tables):
    items = tables[2]
    emb = item_embeddings(model, features, items, batch=32)
    assert emb.shape == (items.num_rows, DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The same content under an id the features never saw: content-only vector, still finite.
    renamed = items.set_column(0, "item_id", pa.array([f"new-{i}" for i in range(items.num_rows)]))
    cold = item_embeddings(model, features, renamed)
    assert np.isfinite(cold).all() and not np.allclose(cold, emb)
    # Id dropout is off in eval mode: embedding twice gives the same vectors.
    np.testing.assert_array_equal(emb, item_embeddings(model, features, items))


def test_onnx_user_tower_matches_torch(model, tmp_path):
    import onnxruntime as ort

    path = export_user_tower(model, tmp_path / "user_tower.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    assert sess.get_outputs()[0].name == OUTPUT_NAME
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert isinstance(shapes["history_emb"][0], str) and isinstance(shapes["history_emb"][1], str)
    assert shapes["history_emb"][2] == DIM
    diff = verify_onnx(model, path, batch=(1, 9), lengths=(2, 17))
    assert diff < 1e-4
