"""The promotion gate end to end: evidence in, a promoted bundle (or a recorded refusal) out.

Plain functions over the lake, called by the `deployment` asset; no dagster, no torch.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_dagster.bundle.assemble import assemble_bundle_dir
from recsys_dagster.bundle.format import read_pointer
from recsys_dagster.bundle.gate import GateConfig, GateDecision, InfraReport, evaluate_gate
from recsys_dagster.bundle.promote import new_version, promote, record_decision, write_bundle
from recsys_dagster.contract import EVALUATION, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.ml.evaluate import EvaluationRecord


@dataclass(frozen=True)
class ReleaseOutcome:
    week: str
    promoted: bool
    version: str | None  # the promoted version, None on refusal
    decision: GateDecision
    infra: InfraReport
    mlflow_model_version: str  # the candidate's registered version
    test_users: int  # users the evaluation compared the systems on


def infra_check(bundle_dir: Path, n_requests: int = 300, seed: int = 0) -> InfraReport:
    """Load the bundle the way serving does (onnxruntime + faiss) and answer a mixed batch
    of requests: known users, real-time histories and unknown users."""
    from recsys_dagster.serving.engine import Engine

    try:
        engine = Engine.from_dir(bundle_dir)
    except Exception as exc:  # any load failure refuses the bundle; the reason is recorded
        return InfraReport(loaded=False, errors=1, error=f"{type(exc).__name__}: {exc}")
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
    return InfraReport(
        loaded=True,
        p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
        p50_ms=float(np.median(latencies)) if latencies else None,
        errors=errors,
        error=last_error,
        requests=n_requests,
    )


def gated_ranker(lake: Lake, week: str) -> dict[str, Any] | None:
    """The `RankerSpec` the offline evaluation scored for `week` (None without a ranker)."""
    from recsys_dagster.bundle.ranker import EVAL, ranker_prefix
    from recsys_dagster.serving.ranker import RANKER_SPEC, RankerSpec

    key = f"{ranker_prefix(week, EVAL)}/{RANKER_SPEC}"
    return RankerSpec.from_json(lake.get_bytes(key)).to_dict() if lake.exists(key) else None


def _recall20(per_user: pa.Table, system: str, metric: str = "recall@20") -> np.ndarray:
    """The system's per-user `metric` from `per_user.parquet`; a missing column is an error."""
    column = f"{system}.{metric}"
    if column not in per_user.column_names:
        raise ValueError(f"per_user.parquet has no {column!r} column: re-run model_evaluation")
    return per_user.column(column).to_numpy()


def release(
    lake: Lake,
    week: str,
    *,
    checks_passed: dict[str, bool],
    cfg: GateConfig,
    workdir: Path,
    actor: str = "pipeline",
    fail_at: str | None = None,
) -> ReleaseOutcome:
    """Gate the week's candidate; on pass write, verify and promote its bundle.

    A refusal leaves production untouched and is appended to the audit history.
    """
    prefix = week_prefix(EVALUATION, week)
    evaluation = EvaluationRecord.from_dict(lake.read_json(f"{prefix}/metrics.json"))
    per_user = pq.read_table(io.BytesIO(lake.get_bytes(f"{prefix}/per_user.parquet")))
    if per_user.num_rows != evaluation.n_users:
        raise ValueError(f"per_user.parquet has {per_user.num_rows} rows, metrics.json {evaluation.n_users} users")
    bundle_dir = workdir / "bundle"
    bundle_meta = assemble_bundle_dir(lake, week, bundle_dir, stage="ship")
    infra = infra_check(bundle_dir)

    pointer = read_pointer(lake)
    systems = evaluation.systems
    baselines = evaluation.gated_baselines()
    champion_compared = pointer is not None and evaluation.champion_version is not None
    decision = evaluate_gate(
        cfg,
        checks_passed=checks_passed,
        per_user_candidate=_recall20(per_user, "candidate"),
        per_user_baselines={name: _recall20(per_user, name) for name in baselines},
        per_user_champion=_recall20(per_user, "champion") if champion_compared else None,
        index_recall=bundle_meta.index_recall_at_10,
        infra=infra,
        candidate_week=week,
        champion=pointer,
        evaluated_champion_version=evaluation.champion_version,
        per_user_ndcg_candidate=_recall20(per_user, "candidate", "ndcg@10"),
        per_user_ndcg_baselines={name: _recall20(per_user, name, "ndcg@10") for name in baselines},
    )

    entry = {
        "week": week,
        "candidate_run": evaluation.mlflow_run_id,
        "candidate_model_version": evaluation.mlflow_model_version,
        "champion": pointer.get("version") if pointer else None,
        "gate": decision.to_dict(),
        "actor": actor,
    }
    outcome = dict(
        week=week,
        decision=decision,
        infra=infra,
        mlflow_model_version=evaluation.mlflow_model_version,
        test_users=evaluation.n_users,
    )
    if not decision.promote:
        record_decision(lake, {"action": "refuse", **entry, "reasons": decision.reasons})
        return ReleaseOutcome(promoted=False, version=None, **outcome)

    version = new_version(week)
    write_bundle(
        lake,
        version,
        bundle_dir,
        {
            "week": week,
            "training_window": evaluation.training_window,
            "mlflow_run_id": evaluation.mlflow_run_id,
            "mlflow_model_version": evaluation.mlflow_model_version,
            "metrics": {
                "candidate": systems["candidate"],
                "baselines": {k: systems[k] for k in [*baselines, "champion"] if k in systems},
                "baseline_choices": evaluation.baselines,
                "test_users": evaluation.n_users,
            },
            "gate": decision.to_dict(),
            "embedding_dim": bundle_meta.embedding_dim,
            "index_type": bundle_meta.index_type,
            "index_params": bundle_meta.index_params,
            "history_len": bundle_meta.history_len,
            # The gate judged `metrics` on the gated towers and ranker; what ships is their
            # refit on the whole window unless refit was off ("refit": false).
            "refit": {
                "towers": bundle_meta.refit,
                "ranker": bool(bundle_meta.ranker and bundle_meta.ranker["refit"]),
                "gated_ranker": gated_ranker(lake, week),
                "shipped_ranker": bundle_meta.ranker,
            },
            "infra_check": infra.to_dict(),
        },
    )
    record_decision(lake, {"action": "decision", **entry, "version": version})
    promote(lake, version, reason=f"gate passed for week {week}", actor=actor, extra={"week": week}, fail_at=fail_at)
    return ReleaseOutcome(promoted=True, version=version, **outcome)
