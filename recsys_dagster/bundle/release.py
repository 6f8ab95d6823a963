"""The promotion gate end to end: evidence in, a promoted bundle (or a recorded refusal) out.

Plain functions over the lake, called by the `deployment` asset; no dagster, no torch.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recsys_dagster.bundle.assemble import assemble_bundle_dir
from recsys_dagster.bundle.format import read_pointer
from recsys_dagster.bundle.gate import GateConfig, GateDecision, RuleResult, evaluate_gate, manifest_week, newer_than_champion
from recsys_dagster.bundle.promote import new_version, promote, record_decision, write_bundle
from recsys_dagster.contract import EVALUATION, week_prefix
from recsys_dagster.lake import Lake


def infra_check(bundle_dir: Path, n_requests: int = 300, seed: int = 0) -> dict[str, Any]:
    """Load the bundle the way serving does (onnxruntime + faiss) and answer a mixed batch
    of requests: known users, real-time histories and unknown users."""
    from recsys_dagster.serving.engine import Engine

    try:
        engine = Engine.from_dir(bundle_dir)
    except Exception as exc:  # any load failure refuses the bundle; the reason is recorded
        return {"loaded": False, "p95_ms": None, "errors": 1, "error": f"{type(exc).__name__}: {exc}"}
    rng = np.random.default_rng(seed)
    users = list(engine.histories)[:1000] or ["nobody"]
    active = engine.catalog.item_id[engine.catalog.active]
    latencies, errors, last_error = [], 0, None
    for i in range(n_requests):
        kind = i % 3
        try:
            t0 = time.perf_counter()
            if kind == 0:
                engine.recommend(users[int(rng.integers(len(users)))], k=20)
            elif kind == 1:
                recent = list(rng.choice(active, size=min(5, len(active)), replace=False)) if len(active) else []
                engine.recommend(f"anon-{i}", recent_items=recent, k=20)
            else:
                engine.recommend(f"new-user-{i}", k=20)
            latencies.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # counted, not raised: the gate decides
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
    p95 = float(np.percentile(latencies, 95)) if latencies else None
    return {"loaded": True, "p95_ms": p95, "p50_ms": float(np.median(latencies)) if latencies else None, "errors": errors, "error": last_error, "requests": n_requests}


def _per_user(per_user, column: str) -> np.ndarray | None:
    return per_user.column(column).to_numpy() if column in per_user.column_names else None


def release(
    lake: Lake,
    week: str,
    *,
    checks_passed: dict[str, bool],
    cfg: GateConfig,
    workdir: Path,
    actor: str = "pipeline",
    fail_at: str | None = None,
) -> dict[str, Any]:
    """Gate the week's candidate; on pass write, verify and promote its bundle.

    Returns {"promoted": bool, "version": str | None, "decision": {...}, "markdown": str}.
    A refusal leaves production untouched and is appended to the audit history.
    """
    prefix = week_prefix(EVALUATION, week)
    metrics = lake.read_json(f"{prefix}/metrics.json")
    per_user = pq.read_table(io.BytesIO(lake.get_bytes(f"{prefix}/per_user.parquet")))
    bundle_dir = workdir / "bundle"
    bundle_meta = assemble_bundle_dir(lake, week, bundle_dir)
    infra = infra_check(bundle_dir)

    pointer = read_pointer(lake)
    stale = pointer is not None and metrics.get("champion_version") != pointer.get("version")
    systems = metrics["systems"]
    decision = evaluate_gate(
        cfg,
        checks_passed=checks_passed,
        candidate_recall20=float(systems["candidate"]["recall@20"]),
        popularity_recall20=float(systems["popularity"]["recall@20"]),
        per_user_candidate=_per_user(per_user, "candidate.recall@20"),
        per_user_champion=None if pointer is None else _per_user(per_user, "champion.recall@20"),
        index_recall=float(bundle_meta["index_recall_at_10"] or 0.0),
        infra=infra,
    )
    extra_rules = [
        RuleResult(
            name="newer_than_champion",
            passed=newer_than_champion(week, pointer),
            value=week,
            threshold=manifest_week(pointer) if pointer else None,
            detail="no champion" if pointer is None else f"candidate week {week} vs champion week {manifest_week(pointer)}",
        ),
        RuleResult(
            name="evaluated_against_current_champion",
            passed=not stale,
            value=metrics.get("champion_version"),
            threshold=pointer.get("version") if pointer else None,
            detail="the champion changed after this evaluation: re-run model_evaluation" if stale else "ok",
        ),
    ]
    rules = decision.rules + extra_rules
    failed = [f"{r.name}: {r.detail}" for r in rules if not r.passed]
    decision = GateDecision(promote=not failed, rules=rules, reasons=failed)

    entry = {
        "week": week,
        "candidate_run": metrics["candidate"]["mlflow_run_id"],
        "candidate_model_version": metrics["candidate"]["mlflow_model_version"],
        "champion": pointer.get("version") if pointer else None,
        "gate": decision.to_dict(),
        "actor": actor,
    }
    if not decision.promote:
        record_decision(lake, {"action": "refuse", **entry, "reasons": failed})
        return {"promoted": False, "version": None, "decision": decision.to_dict(), "markdown": decision.markdown(), "infra": infra}

    version = new_version(week)
    candidate_metrics = systems["candidate"]
    write_bundle(
        lake,
        version,
        bundle_dir,
        {
            "week": week,
            "training_window": metrics["candidate"].get("training_window"),
            "mlflow_run_id": metrics["candidate"]["mlflow_run_id"],
            "mlflow_model_version": metrics["candidate"]["mlflow_model_version"],
            "metrics": {
                "candidate": candidate_metrics,
                "baselines": {k: systems[k] for k in ("popularity", "cooccurrence", "champion") if k in systems},
                "test_users": metrics["n_users"],
            },
            "gate": decision.to_dict(),
            "embedding_dim": bundle_meta["embedding_dim"],
            "index_type": bundle_meta["index_type"],
            "index_params": bundle_meta["index_params"],
            "history_len": bundle_meta["history_len"],
            "infra_check": infra,
        },
    )
    record_decision(lake, {"action": "decision", **entry, "version": version})
    promote(lake, version, reason=f"gate passed for week {week}", actor=actor, extra={"week": week}, fail_at=fail_at)
    return {"promoted": True, "version": version, "decision": decision.to_dict(), "markdown": decision.markdown(), "infra": infra}
