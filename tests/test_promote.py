"""Bundles: write/verify, promotion, rollback, crash safety and status, on local and S3 lakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recsys_dagster.bundle.format import (
    BUNDLE_FILES,
    HISTORY_KEY,
    POINTER_KEY,
    BundleError,
    bundle_prefix,
    fetch_bundle,
    read_pointer,
)
from recsys_dagster.bundle.promote import (
    FAIL_POINTS,
    InjectedFailure,
    PromotionError,
    format_status,
    list_versions,
    new_version,
    promote,
    record_decision,
    rollback,
    status,
    verify_bundle,
    write_bundle,
)
from recsys_dagster.lake import Lake

T0 = datetime(2026, 10, 21, 3, 5, 1, tzinfo=UTC)


def make_bundle(lake: Lake, tmp_path: Path, week: str, n: int, recall: float = 0.2) -> str:
    """A bundle of placeholder files with distinct bytes; returns its version."""
    version = new_version(week, T0 + timedelta(minutes=n))
    src = tmp_path / f"src-{version}"
    src.mkdir()
    for i, name in enumerate(BUNDLE_FILES):
        (src / name).write_bytes(f"{version}:{name}:".encode() + bytes([i, n]) * (10 + i))
    write_bundle(
        lake,
        version,
        src,
        {"embedding_dim": 8, "index_type": "flat", "week": week, "metrics": {"recall@20": recall, "ndcg@20": 0.1}},
    )
    return version


def history(lake: Lake) -> list[dict]:
    return lake.read_jsonl(HISTORY_KEY)


def tamper(lake: Lake, version: str, name: str = "item_index.faiss") -> None:
    key = f"{bundle_prefix(version)}/{name}"
    data = bytearray(lake.get_bytes(key))
    data[-1] ^= 0xFF  # one byte, same size: only the checksum can catch it
    lake.put_bytes(key, bytes(data))


def assert_pointer_verifies(lake: Lake, tmp_path: Path) -> str:
    pointer = read_pointer(lake)
    assert pointer is not None
    m = fetch_bundle(lake, pointer["version"], tmp_path / f"fetch-{len(list(tmp_path.iterdir()))}")
    assert m.files == pointer["files"]  # the pointer is that bundle's manifest, not a mix
    return pointer["version"]


def test_new_version_format_and_bad_input():
    assert new_version("2026-10-19", T0) == "w2026-10-19-20261021T030501Z"
    berlin = datetime(2026, 10, 21, 5, 5, 1, tzinfo=ZoneInfo("Europe/Berlin"))  # UTC+2 in October
    assert new_version("2026-10-19", berlin) == "w2026-10-19-20261021T030501Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        new_version("2026-10-19", datetime(2026, 10, 21))
    for bad in ("2026-13-01", "19-10-2026", ""):
        with pytest.raises(ValueError):
            new_version(bad, T0)


def test_write_and_verify_bundle(any_lake: Lake, tmp_path: Path):
    v = make_bundle(any_lake, tmp_path, "2026-10-19", 1)
    m = verify_bundle(any_lake, v, tmp_path / "work")
    assert m.version == v and m.embedding_dim == 8 and m.index_type == "flat"
    assert set(m.files) == set(BUNDLE_FILES)
    for name in BUNDLE_FILES:
        local = (tmp_path / "work" / name).read_bytes()
        assert m.files[name]["size"] == len(local)
    assert m.raw["metrics"]["recall@20"] == 0.2 and m.raw["format_version"] == 1 and m.raw["created_at"]
    assert list_versions(any_lake) == [v]


def test_bundles_are_immutable_and_inputs_checked(local_lake: Lake, tmp_path: Path):
    v = make_bundle(local_lake, tmp_path, "2026-10-19", 1)
    with pytest.raises(BundleError, match="immutable"):
        write_bundle(local_lake, v, tmp_path / f"src-{v}", {"embedding_dim": 8, "index_type": "flat"})
    src = tmp_path / "partial"
    src.mkdir()
    (src / "user_tower.onnx").write_bytes(b"x")
    v2 = new_version("2026-10-26", T0)
    with pytest.raises(BundleError, match="lacks bundle files"):
        write_bundle(local_lake, v2, src, {"embedding_dim": 8, "index_type": "flat"})
    with pytest.raises(ValueError, match="may not set"):
        write_bundle(local_lake, v2, tmp_path / f"src-{v}", {"embedding_dim": 8, "index_type": "flat", "files": {}})
    with pytest.raises(ValueError, match="embedding_dim"):
        write_bundle(local_lake, v2, tmp_path / f"src-{v}", {"index_type": "flat"})
    with pytest.raises(BundleError, match="version must look like"):
        write_bundle(local_lake, "../escape", tmp_path / f"src-{v}", {"embedding_dim": 8, "index_type": "flat"})
    assert list_versions(local_lake) == [v]


def test_manifest_is_written_last(local_lake: Lake, tmp_path: Path, monkeypatch):
    order: list[str] = []
    real_put = local_lake.backend.put_bytes
    monkeypatch.setattr(local_lake.backend, "put_bytes", lambda k, d: (order.append(k), real_put(k, d)))
    v = make_bundle(local_lake, tmp_path, "2026-10-19", 1)
    assert order[-1] == f"{bundle_prefix(v)}/manifest.json"
    assert len(order) == len(BUNDLE_FILES) + 1


def test_promote_rollback_and_rollback_to_specific(any_lake: Lake, tmp_path: Path):
    a = make_bundle(any_lake, tmp_path, "2026-10-12", 1)
    b = make_bundle(any_lake, tmp_path, "2026-10-19", 2)
    c = make_bundle(any_lake, tmp_path, "2026-10-26", 3)
    assert read_pointer(any_lake) is None

    p = promote(any_lake, a, reason="gate passed", extra={"mlflow_model_version": "1"})
    assert p["version"] == a and p["previous_version"] is None and p["promoted_at"]
    promote(any_lake, b, reason="gate passed")
    promote(any_lake, c, reason="gate passed")
    assert read_pointer(any_lake)["version"] == c

    p = rollback(any_lake, reason="bad CTR")
    assert p["version"] == b and p["previous_version"] == c
    p = rollback(any_lake)  # undoes the next promotion still in effect, not back to c
    assert p["version"] == a
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(any_lake)
    p = rollback(any_lake, c, reason="c was fine after all", actor="alice")
    assert p["version"] == c and p["previous_version"] == a
    assert_pointer_verifies(any_lake, tmp_path)

    h = history(any_lake)
    assert [(e["action"], e["version"], e["previous_version"]) for e in h] == [
        ("promote", a, None),
        ("promote", b, a),
        ("promote", c, b),
        ("rollback", b, c),
        ("rollback", a, b),
        ("rollback", c, a),
    ]
    assert h[0]["mlflow_model_version"] == "1" and h[0]["actor"] == "pipeline"
    assert h[3]["reason"] == "bad CTR" and h[3]["actor"] == "cli" and h[5]["actor"] == "alice"
    assert [e["at"] for e in h] == sorted(e["at"] for e in h)
    assert status(any_lake)["consistent"]


def test_rollback_refusals(local_lake: Lake, tmp_path: Path):
    with pytest.raises(PromotionError, match="nothing is promoted"):
        rollback(local_lake)
    a = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    b = make_bundle(local_lake, tmp_path, "2026-10-19", 2)
    promote(local_lake, a, reason="first")
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(local_lake)
    with pytest.raises(PromotionError, match="already promoted"):
        rollback(local_lake, a)
    with pytest.raises(PromotionError, match="never promoted"):
        rollback(local_lake, b)
    assert read_pointer(local_lake)["version"] == a
    assert [e["action"] for e in history(local_lake)] == ["promote"]


def test_promoting_the_current_version_flips_nothing(local_lake: Lake, tmp_path: Path):
    a = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    first = promote(local_lake, a, reason="first")
    again = promote(local_lake, a, reason="retry")
    assert again == first
    assert len(history(local_lake)) == 1


@pytest.mark.parametrize("fail_at", FAIL_POINTS)
def test_crash_at_any_step_leaves_a_complete_bundle_promoted(local_lake: Lake, tmp_path: Path, fail_at: str):
    old = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    new = make_bundle(local_lake, tmp_path, "2026-10-19", 2)
    promote(local_lake, old, reason="first")

    with pytest.raises(InjectedFailure):
        promote(local_lake, new, reason="weekly", fail_at=fail_at)

    flipped = fail_at in ("after_flip", "after_history")
    assert assert_pointer_verifies(local_lake, tmp_path) == (new if flipped else old)
    st = status(local_lake)
    h = history(local_lake)
    if fail_at == "after_flip":
        # The flip happened but the audit log missed it: reported, then repaired by the next run.
        assert not st["consistent"]
        assert any("lacks the flip to " + new in p for p in st["problems"])
        assert [e["action"] for e in h] == ["promote"]
        promote(local_lake, new, reason="retried run")  # already promoted: reconciles only
        h = history(local_lake)
        assert [(e["action"], e["version"]) for e in h] == [("promote", old), ("reconcile", new)]
        assert h[1]["reconciled_action"] == "promote" and "weekly" in h[1]["reason"]
        assert status(local_lake)["consistent"]
        assert rollback(local_lake)["version"] == old  # the reconciled flip counts for rollback
    elif fail_at == "after_history":
        assert st["consistent"]
        assert [(e["action"], e["version"]) for e in h] == [("promote", old), ("promote", new)]
    else:
        assert st["consistent"]
        assert [e["action"] for e in h] == ["promote"]
        assert promote(local_lake, new, reason="retried")["version"] == new


def test_gap_is_reconciled_before_a_rollback_on_s3(s3_lake: Lake, tmp_path: Path):
    a = make_bundle(s3_lake, tmp_path, "2026-10-12", 1)
    b = make_bundle(s3_lake, tmp_path, "2026-10-19", 2)
    promote(s3_lake, a, reason="first")
    with pytest.raises(InjectedFailure):
        promote(s3_lake, b, reason="weekly", fail_at="after_flip")
    assert not status(s3_lake)["consistent"]
    assert rollback(s3_lake, reason="oops")["version"] == a
    assert [(e["action"], e["version"]) for e in history(s3_lake)] == [
        ("promote", a),
        ("reconcile", b),
        ("rollback", a),
    ]
    assert status(s3_lake)["consistent"]


def test_first_promotion_crash_before_flip_leaves_nothing_promoted(local_lake: Lake, tmp_path: Path):
    a = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    with pytest.raises(InjectedFailure):
        promote(local_lake, a, reason="first", fail_at="after_verify")
    assert read_pointer(local_lake) is None
    with pytest.raises(ValueError, match="fail_at"):
        promote(local_lake, a, reason="first", fail_at="after_verfy")


def test_tampered_bundle_is_refused_everywhere(any_lake: Lake, tmp_path: Path):
    a = make_bundle(any_lake, tmp_path, "2026-10-12", 1)
    b = make_bundle(any_lake, tmp_path, "2026-10-19", 2)
    c = make_bundle(any_lake, tmp_path, "2026-10-26", 3)
    promote(any_lake, a, reason="first")
    promote(any_lake, b, reason="second")
    tamper(any_lake, c)
    with pytest.raises(BundleError, match="sha256"):
        verify_bundle(any_lake, c)
    with pytest.raises(BundleError):
        promote(any_lake, c, reason="weekly")
    assert read_pointer(any_lake)["version"] == b
    tamper(any_lake, a, "popular.json")
    with pytest.raises(BundleError):
        rollback(any_lake)
    assert read_pointer(any_lake)["version"] == b
    refusals = [e for e in history(any_lake) if e["action"] == "refuse"]
    assert [(e["requested"], e["version"]) for e in refusals] == [("promote", c), ("rollback", a)]
    assert all("verification" in e["reason"] for e in refusals)


def test_bundle_without_manifest_is_incomplete_and_never_promoted(local_lake: Lake, tmp_path: Path):
    a = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    partial = new_version("2026-10-19", T0)
    local_lake.put_bytes(f"{bundle_prefix(partial)}/user_tower.onnx", b"half")
    with pytest.raises(BundleError, match="no manifest"):
        promote(local_lake, partial, reason="weekly")
    st = status(local_lake)
    info = {v["version"]: v for v in st["versions"]}
    assert info[a]["complete"] and not info[partial]["complete"]
    assert "no manifest" in info[partial]["problem"]


def test_record_decision_and_status_text(any_lake: Lake, tmp_path: Path):
    a = make_bundle(any_lake, tmp_path, "2026-10-12", 1, recall=0.3141)
    b = make_bundle(any_lake, tmp_path, "2026-10-19", 2)
    record_decision(any_lake, {"action": "decision", "version": a, "reason": "all rules passed", "actor": "pipeline"})
    promote(any_lake, a, reason="gate passed")
    record_decision(
        any_lake, {"action": "refuse", "version": b, "reason": "beats_popularity: 0.10 < 0.12", "actor": "pipeline"}
    )
    with pytest.raises(ValueError, match="action"):
        record_decision(any_lake, {"action": "promote", "version": b})

    st = status(any_lake, last=2)
    assert st["promoted"]["version"] == a and st["consistent"] and st["problems"] == []
    assert [v["version"] for v in st["versions"]] == [a, b] and all(v["complete"] for v in st["versions"])
    assert [e["action"] for e in st["history"]] == ["promote", "refuse"]
    json.dumps(st)  # the CLI may print it as JSON

    text = format_status(st)
    assert f"promoted: {a}" in text
    assert "recall@20=0.3141" in text
    assert "beats_popularity: 0.10 < 0.12" in text and "gate passed" in text
    assert "consistent: yes" in text

    empty = format_status(status(Lake.from_uri(f"file://{tmp_path / 'empty'}")))
    assert "nothing was ever promoted" in empty


def test_status_reports_corruption(local_lake: Lake, tmp_path: Path):
    a = make_bundle(local_lake, tmp_path, "2026-10-12", 1)
    b = make_bundle(local_lake, tmp_path, "2026-10-19", 2)
    promote(local_lake, a, reason="first")
    local_lake.put_bytes(HISTORY_KEY, local_lake.get_bytes(HISTORY_KEY) + b"{not json\n")
    tamper(local_lake, a)
    st = status(local_lake)
    assert not st["consistent"]
    assert any("line 2 is not JSON" in p for p in st["problems"])
    assert any("does not verify" in p for p in st["problems"])
    assert "consistent: NO" in format_status(st)
    # A corrupt line does not block the pipeline; it stays in the log for a human.
    promote(local_lake, b, reason="second")
    assert b"{not json" in local_lake.get_bytes(HISTORY_KEY)
    local_lake.delete(POINTER_KEY)
    assert any("promoted/manifest.json is missing" in p for p in status(local_lake)["problems"])
