"""The promotion gate's rules: pure evaluation over numbers the pipeline measured, no I/O.

A candidate is promoted only when every rule passes; a failed rule's detail becomes one of
the decision's reasons, which the deployment asset audits in `promoted/history.jsonl`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recsys_dagster.settings import documented

_WEEK_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERSION_WEEK_RE = re.compile(r"^w(\d{4}-\d{2}-\d{2})-")
# Bootstrap resamples are drawn in chunks so memory stays ~32 MB whatever the user count.
_BOOT_CHUNK_ELEMENTS = 4_000_000
_EPS = 1e-12


# The index check (blocking, on faiss_index) and the gate's index rule share this floor.
MIN_INDEX_RECALL = 0.95


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate."""

    baseline_margin: float = documented(
        0.0,
        "Absolute per-user recall@20 margin over the strongest baseline: the lower 95% CI bound of "
        "candidate - strongest baseline must exceed this.",
    )
    min_test_users: int = documented(
        200, "Test users (with a target) the evaluation needs before the gate trusts its comparisons."
    )
    champion_tolerance: float = documented(
        0.01, "Absolute recall@20 drop vs the champion the lower 95% CI bound may show."
    )
    min_index_recall: float = documented(MIN_INDEX_RECALL, "Index recall@10 against exact search, at least.")
    latency_budget_ms: float = documented(50.0, "p95 latency budget of the serving load check, in ms.")
    n_boot: int = documented(2000, "Bootstrap resamples of the paired confidence interval.")
    seed: int = documented(0, "Seed of the bootstrap.")

    def __post_init__(self) -> None:
        if not 0 <= self.baseline_margin < 1:
            raise ValueError(f"baseline_margin must be in [0, 1), got {self.baseline_margin}")
        if self.min_test_users < 1:
            raise ValueError(f"min_test_users must be >= 1, got {self.min_test_users}")
        if not self.champion_tolerance >= 0:
            raise ValueError(f"champion_tolerance must be >= 0, got {self.champion_tolerance}")
        if not 0 < self.min_index_recall <= 1:
            raise ValueError(f"min_index_recall must be in (0, 1], got {self.min_index_recall}")
        if not self.latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be > 0, got {self.latency_budget_ms}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a stable 95% interval, got {self.n_boot}")


@dataclass(frozen=True)
class InfraReport:
    """What the serving load check of a bundle measured (`bundle/release.infra_check`)."""

    loaded: bool
    p95_ms: float | None = None
    p50_ms: float | None = None
    errors: int = 0
    error: str | None = None
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    value: float | int | str | None
    threshold: float | int | str | None
    detail: str


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    rules: list[RuleResult]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "rules": [asdict(r) for r in self.rules], "reasons": list(self.reasons)}

    def markdown(self) -> str:
        lines = ["| rule | value | threshold | verdict |", "|---|---|---|---|"]
        for r in self.rules:
            verdict = "pass" if r.passed else f"**FAIL**: {r.detail}"
            lines.append(f"| {r.name} | {_fmt(r.value)} | {_fmt(r.threshold)} | {verdict} |")
        lines.append("")
        lines.append(f"**Decision: {'promote' if self.promote else 'do not promote'}**")
        return "\n".join(lines)


def _fmt(v: float | int | str | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


def _finite_fraction(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0


def paired_bootstrap_ci(diff: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `diff` with a percentile bootstrap over users.

    Resampling users (rows) keeps the pairing: each resampled user contributes its own
    candidate-minus-champion difference.
    """
    d = np.asarray(diff, dtype=np.float64)
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(d.mean()), float(low), float(high)


def _per_user(name: str, a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-user metric values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def _rule_upstream(checks_passed: dict[str, bool]) -> RuleResult:
    failing = sorted(k for k, ok in checks_passed.items() if ok is not True)
    n = len(checks_passed)
    value = f"{n - len(failing)}/{n}"
    if not checks_passed:
        return RuleResult("upstream_checks", False, value, "all", "no upstream check results were given")
    if failing:
        return RuleResult("upstream_checks", False, value, "all", f"upstream checks failed: {', '.join(failing)}")
    return RuleResult("upstream_checks", True, value, "all", f"all {n} upstream checks passed")


def _rule_evidence(cfg: GateConfig, n_users: int) -> RuleResult:
    name = "enough_evidence"
    if n_users < cfg.min_test_users:
        detail = f"insufficient_evidence: {n_users} test users < {cfg.min_test_users}"
        return RuleResult(name, False, n_users, cfg.min_test_users, detail)
    detail = f"{n_users} test users >= {cfg.min_test_users}"
    return RuleResult(name, True, n_users, cfg.min_test_users, detail)


def _rule_baseline(
    cfg: GateConfig, candidate: np.ndarray, baselines: Mapping[str, np.ndarray], metric: str = "recall@20"
) -> RuleResult:
    """The candidate against the baseline with the highest mean `metric` (the first of
    equals), paired over users: the lower 95% CI bound of the mean difference must exceed
    the margin."""
    name = "beats_strongest_baseline" if metric == "recall@20" else f"beats_strongest_baseline_{metric}"
    if not baselines:
        return RuleResult(name, False, None, cfg.baseline_margin, "no baseline was evaluated: nothing to beat")
    per_user = {k: _per_user(f"per_user_baselines[{k!r}]", v) for k, v in baselines.items()}
    misaligned = {k: v.shape for k, v in per_user.items() if v.shape != candidate.shape}
    if misaligned:
        raise ValueError(
            f"per-user arrays must be aligned on the same users: candidate {candidate.shape} vs {misaligned}"
        )
    means = {k: float(v.mean()) for k, v in per_user.items()}
    strongest = max(means, key=lambda k: means[k])  # max keeps the first of equals
    mean, low, high = paired_bootstrap_ci(candidate - per_user[strongest], n_boot=cfg.n_boot, seed=cfg.seed)
    passed = low > cfg.baseline_margin
    detail = (
        f"strongest baseline {strongest} {metric} {means[strongest]:.4f}, candidate {float(candidate.mean()):.4f}; "
        f"candidate-{strongest} {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}] over {candidate.size} users; "
        f"lower bound {'>' if passed else '<='} {cfg.baseline_margin:+.4f}"
    )
    return RuleResult(name, passed, low, cfg.baseline_margin, detail)


def _rule_champion(cfg: GateConfig, cand: np.ndarray, per_user_champion: np.ndarray | None) -> RuleResult:
    name = "no_regression_vs_champion"
    threshold = -cfg.champion_tolerance
    if per_user_champion is None:
        return RuleResult(name, True, None, threshold, "no champion: first model")
    champ = _per_user("per_user_champion", per_user_champion)
    if cand.shape != champ.shape:
        raise ValueError(
            f"per-user arrays must be aligned on the same users: candidate {cand.shape} vs champion {champ.shape}"
        )
    mean, low, high = paired_bootstrap_ci(cand - champ, n_boot=cfg.n_boot, seed=cfg.seed)
    passed = low > threshold
    detail = (
        f"recall@20 candidate-champion {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}] over {cand.size} users; "
        f"lower bound {'>' if passed else '<='} {threshold:+.4f}"
    )
    return RuleResult(name, passed, low, threshold, detail)


def _rule_index(cfg: GateConfig, index_recall: float) -> RuleResult:
    name = "index_recall"
    if not _finite_fraction(index_recall):
        detail = f"index recall must be in [0, 1], got {index_recall!r}"
        return RuleResult(name, False, None, cfg.min_index_recall, detail)
    passed = float(index_recall) >= cfg.min_index_recall - _EPS
    detail = f"index recall@10 vs exact {index_recall:.4f} {'>=' if passed else '<'} {cfg.min_index_recall:.4f}"
    return RuleResult(name, passed, float(index_recall), cfg.min_index_recall, detail)


def _rule_infra(cfg: GateConfig, infra: InfraReport) -> RuleResult:
    name = "serving_infra"
    problems: list[str] = []
    if infra.loaded is not True:
        problems.append("bundle did not load in the serving check")
    errors = infra.errors
    if not isinstance(errors, int) or errors != 0:
        problems.append(f"{errors!r} request errors")
    if infra.error:
        problems.append(f"error: {infra.error}")
    p95 = infra.p95_ms
    p95_ok = isinstance(p95, (int, float)) and math.isfinite(p95) and p95 >= 0
    if not p95_ok:
        problems.append(f"p95 latency not measured ({p95!r})")
    elif p95 > cfg.latency_budget_ms:
        problems.append(f"p95 {p95:.1f} ms > budget {cfg.latency_budget_ms:.1f} ms")
    value = float(p95) if p95_ok else None
    if problems:
        return RuleResult(name, False, value, cfg.latency_budget_ms, "serving check: " + "; ".join(problems))
    return RuleResult(
        name,
        True,
        value,
        cfg.latency_budget_ms,
        f"bundle loaded, 0 errors, p95 {p95:.1f} ms <= {cfg.latency_budget_ms:.1f} ms",
    )


def _rule_newer(candidate_week: str, champion: dict[str, Any] | None) -> RuleResult:
    if champion is None:
        return RuleResult("newer_than_champion", True, candidate_week, None, "no champion")
    champion_week = manifest_week(champion)
    passed = newer_than_champion(candidate_week, champion)
    detail = f"candidate week {candidate_week} {'>=' if passed else '<'} champion week {champion_week}"
    return RuleResult("newer_than_champion", passed, candidate_week, champion_week, detail)


def _rule_evaluated_against(champion: dict[str, Any] | None, evaluated_against: str | None) -> RuleResult:
    current = champion.get("version") if champion else None
    if evaluated_against != current:
        detail = (
            f"evaluated against champion {evaluated_against!r}, but {current!r} is promoted now: "
            "re-run model_evaluation"
        )
        return RuleResult("evaluated_against_current_champion", False, evaluated_against, current, detail)
    return RuleResult("evaluated_against_current_champion", True, evaluated_against, current, "ok")


def evaluate_gate(
    cfg: GateConfig,
    *,
    checks_passed: dict[str, bool],
    per_user_candidate: np.ndarray,
    per_user_baselines: Mapping[str, np.ndarray],
    per_user_champion: np.ndarray | None,
    index_recall: float,
    infra: InfraReport,
    candidate_week: str,
    champion: dict[str, Any] | None,
    evaluated_champion_version: str | None,
    per_user_ndcg_candidate: np.ndarray | None = None,
    per_user_ndcg_baselines: Mapping[str, np.ndarray] | None = None,
) -> GateDecision:
    """Every rule is evaluated (so the report shows all verdicts); promote iff all pass.

    The per-user arrays hold test recall@20, aligned on the same users: the candidate's,
    each baseline's (`{name: array}`, every baseline the evaluation ran) and the
    champion's (None before the first promotion). With the per-user NDCG@10 arrays, the
    candidate must also beat the strongest baseline by NDCG@10 (its own rule). `champion` is the promoted pointer
    (None before the first promotion); `evaluated_champion_version` the champion the
    evaluation compared against."""
    candidate = _per_user("per_user_candidate", per_user_candidate)
    rules = [
        _rule_upstream(checks_passed),
        _rule_evidence(cfg, candidate.size),
        _rule_baseline(cfg, candidate, per_user_baselines),
        *(
            [
                _rule_baseline(
                    cfg,
                    _per_user("per_user_ndcg_candidate", per_user_ndcg_candidate),
                    per_user_ndcg_baselines,
                    "ndcg@10",
                )
            ]
            if per_user_ndcg_candidate is not None and per_user_ndcg_baselines is not None
            else []
        ),
        _rule_champion(cfg, candidate, per_user_champion),
        _rule_index(cfg, index_recall),
        _rule_infra(cfg, infra),
        _rule_newer(candidate_week, champion),
        _rule_evaluated_against(champion, evaluated_champion_version),
    ]
    reasons = [f"{r.name}: {r.detail}" for r in rules if not r.passed]
    return GateDecision(promote=not reasons, rules=rules, reasons=reasons)


def manifest_week(manifest: dict[str, Any]) -> str:
    """The training week of a bundle manifest: its `week` field, else parsed from the version."""
    week = manifest.get("week")
    if isinstance(week, str) and _WEEK_RE.match(week):
        return week
    m = _VERSION_WEEK_RE.match(str(manifest.get("version", "")))
    if not m:
        raise ValueError(f"cannot tell the week of manifest version {manifest.get('version')!r}")
    return m.group(1)


def newer_than_champion(candidate_week: str, champion_manifest: dict[str, Any] | None) -> bool:
    """False when the champion was trained on a later week (a backfill must not replace it).

    The same week may replace its champion (a re-run of that week).
    """
    if not _WEEK_RE.match(candidate_week or ""):
        raise ValueError(f"candidate week must be YYYY-MM-DD, got {candidate_week!r}")
    if champion_manifest is None:
        return True
    return candidate_week >= manifest_week(champion_manifest)
