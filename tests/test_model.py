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
from recsys_dagster.ml.model import N_HOURS, UNKNOWN_DEVICE, UNKNOWN_HOUR, build_model

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


def test_missing_or_invalid_context_encodes_as_unknown(tables, features):
    train = tables[0].slice(0, 6)
    devices = pa.array(["mobile", None, "phablet", "", "tablet", "desktop"], pa.string())
    hours = pa.array([0, 23, None, 24, -1, 7], pa.int32())
    t = train.set_column(train.schema.get_field_index("device_type"), "device_type", devices)
    t = t.set_column(t.schema.get_field_index("hour"), "hour", hours)
    ex = encode_examples(t, features, history_len=3)
    assert ex.device.tolist() == [0, UNKNOWN_DEVICE, UNKNOWN_DEVICE, UNKNOWN_DEVICE, 2, 1]
    assert ex.hour.tolist() == [0, 23, UNKNOWN_HOUR, UNKNOWN_HOUR, UNKNOWN_HOUR, 7]
    assert (UNKNOWN_DEVICE, UNKNOWN_HOUR, N_HOURS) == (3, 24, 25)


def _epoch(ex, seed: int, p: float) -> dict[str, np.ndarray]:
    batches = list(iterate_batches(ex, 16, torch.device("cpu"), seed=seed, context_dropout=p))
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in ("positive", "device", "hour")}


def test_context_dropout_reaches_unknown_indices_deterministically(tables, features):
    ex = encode_examples(tables[0], features, history_len=3)
    assert (ex.device != UNKNOWN_DEVICE).all() and (ex.hour != UNKNOWN_HOUR).all()  # the data has full context
    plain = _epoch(ex, seed=5, p=0.0)
    dropped = _epoch(ex, seed=5, p=0.3)
    # Same permutation with or without dropout; only device/hour change, and only to unknown.
    np.testing.assert_array_equal(plain["positive"], dropped["positive"])
    changed_d, changed_h = dropped["device"] != plain["device"], dropped["hour"] != plain["hour"]
    assert (dropped["device"][changed_d] == UNKNOWN_DEVICE).all() and (dropped["hour"][changed_h] == UNKNOWN_HOUR).all()
    n = len(ex)
    assert 0.2 < changed_d.mean() < 0.4 and 0.2 < changed_h.mean() < 0.4, (changed_d.mean(), changed_h.mean(), n)
    assert not np.array_equal(changed_d, changed_h)  # independent draws
    assert (plain["device"] != UNKNOWN_DEVICE).all() and (plain["hour"] != UNKNOWN_HOUR).all()
    again = _epoch(ex, seed=5, p=0.3)
    for k in dropped:
        np.testing.assert_array_equal(dropped[k], again[k])  # same seed, same batches
    other, other_plain = _epoch(ex, seed=6, p=0.3), _epoch(ex, seed=6, p=0.0)
    assert not np.array_equal(other["device"] != other_plain["device"], changed_d)  # another seed, other drops
    assert (_epoch(ex, seed=5, p=1.0)["hour"] == UNKNOWN_HOUR).all()
    # The examples themselves are not modified.
    assert (ex.device != UNKNOWN_DEVICE).all() and (ex.hour != UNKNOWN_HOUR).all()
    with pytest.raises(ValueError, match="context_dropout"):
        next(iterate_batches(ex, 16, torch.device("cpu"), context_dropout=1.5))


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
    # The unknown hour (24) and device (3) are rows of their own in the graph, not clamped.
    emb = np.zeros((4, 3, DIM), np.float32)
    mask = np.zeros((4, 3), np.float32)
    device = np.array([0, 0, UNKNOWN_DEVICE, UNKNOWN_DEVICE], np.int64)
    hour = np.array([23, UNKNOWN_HOUR, 23, UNKNOWN_HOUR], np.int64)
    (got,) = sess.run([OUTPUT_NAME], {"history_emb": emb, "history_mask": mask, "device": device, "hour": hour})
    with torch.no_grad():
        ref = model.user_tower(*(torch.from_numpy(a) for a in (emb, mask, device, hour))).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert len({tuple(np.round(r, 5)) for r in got}) == 4
