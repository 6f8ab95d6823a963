"""Writing bundles, promoting and rolling back, and reporting where production stands.

Order of a flip: verify the whole target bundle, write `promoted/manifest.json` in one
atomic put, then append to `promoted/history.jsonl`. A crash between the last two leaves the
pointer on a complete bundle but the audit log one flip behind; every flip carries a
`flip_id`, so `status` sees the gap and the next promote/rollback records a `reconcile`
entry before its own. No dagster, torch or mlflow here: the asset and the CLI call these.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys_dagster.bundle.format import (
    BUNDLE_FILES,
    FORMAT_VERSION,
    HISTORY_KEY,
    MANIFEST,
    POINTER_KEY,
    BundleError,
    Manifest,
    bundle_files,
    bundle_prefix,
    fetch_bundle,
    read_pointer,
    sha256_bytes,
)
from recsys_dagster.contract import MODELS
from recsys_dagster.lake import Lake, LakeError

VERSION_RE = re.compile(r"^w\d{4}-\d{2}-\d{2}-\d{8}T\d{6}Z$")
_WEEK_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

FAIL_POINTS = ("before_verify", "after_verify", "after_flip", "after_history")
FLIP_ACTIONS = ("promote", "rollback", "reconcile")
DECISION_ACTIONS = ("refuse", "decision")

# Written by this module; a caller's manifest fields or history extras may not set them.
_RESERVED_MANIFEST = {
    "version",
    "created_at",
    "format_version",
    "files",
    "promoted_at",
    "previous_version",
    "promotion",
}
_RESERVED_ENTRY = {"action", "version", "previous_version", "at", "reason", "actor", "flip_id"}


class InjectedFailure(RuntimeError):
    """Raised by the `fail_at` hook: tests simulate a crash at a step of a flip."""


class PromotionError(RuntimeError):
    """A promotion or rollback was refused (nothing to roll back to, already promoted...)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays (metrics) and datetimes, without importing numpy here.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, datetime):
        return _iso(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable: {o!r}")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode()


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BundleError(f"bundle version must look like w2026-10-19-20261021T030501Z, got {version!r}")
    return version


def new_version(week: str, now: datetime | None = None) -> str:
    """`w<week>-<UTC timestamp>`, e.g. `w2026-10-19-20261021T030501Z`."""
    if not isinstance(week, str) or not _WEEK_RE.match(week):
        raise ValueError(f"week must be YYYY-MM-DD, got {week!r}")
    datetime.strptime(week, "%Y-%m-%d")  # rejects impossible dates
    t = now or _now()
    if t.tzinfo is None:
        raise ValueError("now must be timezone-aware (versions are UTC timestamps)")
    return f"w{week}-{t.astimezone(UTC):%Y%m%dT%H%M%SZ}"


# --- bundles ---------------------------------------------------------------------------


def write_bundle(lake: Lake, version: str, source_dir: Path, manifest_fields: dict[str, Any]) -> Manifest:
    """Copy the six bundle files to `models/<version>/` and write manifest.json last.

    Bundles are immutable: an existing manifest for `version` is refused. Leftover files of
    a crashed earlier write (no manifest) are overwritten; without a manifest they were
    never a bundle.
    """
    check_version(version)
    clash = sorted(_RESERVED_MANIFEST & set(manifest_fields))
    if clash:
        raise ValueError(f"manifest_fields may not set {clash}: write_bundle writes them")
    for required in ("embedding_dim", "index_type"):
        if required not in manifest_fields:
            raise ValueError(f"manifest_fields needs {required!r}")
    prefix = bundle_prefix(version)
    if lake.exists(f"{prefix}/{MANIFEST}"):
        raise BundleError(f"bundle {version} already exists in {lake.uri}: bundles are immutable")
    src = Path(source_dir)
    missing = [n for n in BUNDLE_FILES if not (src / n).is_file()]
    if missing:
        raise BundleError(f"{src} lacks bundle files: {missing}")
    files: dict[str, dict[str, Any]] = {}
    for name in bundle_files(src):
        data = (src / name).read_bytes()
        # Hash the bytes actually uploaded, not a second read of the file.
        files[name] = {"sha256": sha256_bytes(data), "size": len(data)}
        lake.put_bytes(f"{prefix}/{name}", data)
    raw = {
        **manifest_fields,
        "version": version,
        "created_at": _iso(_now()),
        "format_version": FORMAT_VERSION,
        "files": files,
    }
    manifest = Manifest.parse(json.loads(_dumps(raw)))  # validates before it becomes visible
    lake.put_bytes(f"{prefix}/{MANIFEST}", _dumps(raw))
    return manifest


def verify_bundle(lake: Lake, version: str, workdir: Path | None = None) -> Manifest:
    """Download `models/<version>/` and check every file's sha256 and size; BundleError if not."""
    check_version(version)
    if workdir is not None:
        manifest = fetch_bundle(lake, version, workdir)
    else:
        with tempfile.TemporaryDirectory(prefix=f"verify-{version}-") as tmp:
            manifest = fetch_bundle(lake, version, tmp)
    fv = manifest.raw.get("format_version")
    if fv != FORMAT_VERSION:
        raise BundleError(f"{version}: format_version {fv!r}, this code reads {FORMAT_VERSION}")
    return manifest


def list_versions(lake: Lake) -> list[str]:
    """Every version directory under models/ (complete or not), oldest first."""
    root = MODELS + "/"
    return sorted({k[len(root) :].split("/", 1)[0] for k in lake.list_keys(MODELS) if "/" in k[len(root) :]})


# --- history ---------------------------------------------------------------------------


def _read_history(lake: Lake) -> tuple[list[dict[str, Any]], list[str]]:
    """(entries, problems): a corrupt line is reported, not fatal, and stays in the file."""
    if not lake.exists(HISTORY_KEY):
        return [], []
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, line in enumerate(lake.get_bytes(HISTORY_KEY).decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"history.jsonl line {i} is not JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"history.jsonl line {i} is not an object")
            continue
        entries.append(rec)
    return entries, problems


def _append(lake: Lake, entry: dict[str, Any]) -> None:
    lake.append_jsonl(HISTORY_KEY, json.loads(json.dumps(entry, default=_json_default)))


def _history_gap(pointer: dict[str, Any] | None, entries: list[dict[str, Any]]) -> str | None:
    """Why the history does not end with the pointer's flip, or None when it does."""
    if pointer is None:
        return None
    flips = [e for e in entries if e.get("action") in FLIP_ACTIONS]
    last = flips[-1] if flips else None
    flip_id = (pointer.get("promotion") or {}).get("flip_id")
    if last is not None and last.get("version") == pointer.get("version"):
        if flip_id is None or last.get("flip_id") == flip_id:
            return None
    return (
        f"history.jsonl lacks the flip to {pointer.get('version')} at {pointer.get('promoted_at')} "
        f"(last recorded flip: {last.get('version') if last else 'none'}); "
        "the next promote/rollback records a reconcile entry"
    )


def _reconcile(lake: Lake, pointer: dict[str, Any] | None, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record a flip that reached the pointer but not the history (crash in between)."""
    if _history_gap(pointer, entries) is None:
        return entries
    assert pointer is not None
    promo = pointer.get("promotion") or {}
    entry = {
        "action": "reconcile",
        "version": pointer.get("version"),
        "previous_version": pointer.get("previous_version"),
        "at": _iso(_now()),
        "flipped_at": pointer.get("promoted_at"),
        "flip_id": promo.get("flip_id"),
        "reconciled_action": promo.get("action", "promote"),
        "reason": (
            f"{promo.get('action', 'flip')} to {pointer.get('version')} at {pointer.get('promoted_at')} reached "
            f"the pointer but not the history (interrupted); its reason: {promo.get('reason')!r}"
        ),
        "actor": promo.get("actor", "unknown"),
    }
    _append(lake, entry)
    return [*entries, entry]


def _promotion_stack(entries: list[dict[str, Any]]) -> list[str]:
    """Versions in effect, oldest first: a promote pushes, a rollback pops back to its target."""
    stack: list[str] = []
    for e in entries:
        action = e.get("action")
        if action == "reconcile":
            action = e.get("reconciled_action", "promote")
        version = e.get("version")
        if action == "promote":
            stack.append(version)
        elif action == "rollback":
            if version in stack:
                del stack[len(stack) - stack[::-1].index(version) :]  # back to its latest occurrence
            else:
                stack.append(version)
    return stack


def record_decision(lake: Lake, decision: dict[str, Any]) -> None:
    """Audit a gate outcome that flips nothing: `{"action": "refuse" | "decision", ...}`."""
    action = decision.get("action")
    if action not in DECISION_ACTIONS:
        raise ValueError(
            f"decision action must be one of {DECISION_ACTIONS} (flips are written by promote/rollback), got {action!r}"
        )
    _append(lake, {"at": _iso(_now()), **decision})


# --- flips -----------------------------------------------------------------------------


def _inject(fail_at: str | None, point: str) -> None:
    if fail_at == point:
        raise InjectedFailure(f"injected failure at {point}")


def _flip(
    lake: Lake, manifest: Manifest, previous: dict[str, Any] | None, *, action: str, reason: str, actor: str
) -> dict[str, Any]:
    t = _iso(_now())
    pointer = {
        **manifest.raw,
        "promoted_at": t,
        "previous_version": previous.get("version") if previous else None,
        "promotion": {"flip_id": uuid.uuid4().hex, "action": action, "reason": reason, "actor": actor, "at": t},
    }
    lake.put_bytes(POINTER_KEY, _dumps(pointer))  # the single atomic flip
    return pointer


def _flip_entry(pointer: dict[str, Any]) -> dict[str, Any]:
    p = pointer["promotion"]
    return {
        "action": p["action"],
        "version": pointer["version"],
        "previous_version": pointer["previous_version"],
        "at": pointer["promoted_at"],
        "reason": p["reason"],
        "actor": p["actor"],
        "flip_id": p["flip_id"],
    }


def _verify_or_refuse(lake: Lake, version: str, *, requested: str, actor: str) -> Manifest:
    try:
        return verify_bundle(lake, version)
    except BundleError as exc:
        _append(
            lake,
            {
                "action": "refuse",
                "requested": requested,
                "version": version,
                "at": _iso(_now()),
                "reason": f"bundle failed verification: {exc}",
                "actor": actor,
            },
        )
        raise


def promote(
    lake: Lake,
    version: str,
    *,
    reason: str,
    actor: str = "pipeline",
    extra: dict[str, Any] | None = None,
    fail_at: str | None = None,
) -> dict[str, Any]:
    """Verify `version`, flip the pointer to it, append a "promote" entry; returns the pointer.

    Promoting the version already promoted flips nothing and returns the pointer (a retried
    run after a crash between flip and history only reconciles the log).
    """
    if fail_at is not None and fail_at not in FAIL_POINTS:
        raise ValueError(f"fail_at must be one of {FAIL_POINTS}, got {fail_at!r}")
    extra = dict(extra or {})
    clash = sorted(_RESERVED_ENTRY & set(extra))
    if clash:
        raise ValueError(f"extra may not set {clash}")
    check_version(version)
    _inject(fail_at, "before_verify")
    manifest = _verify_or_refuse(lake, version, requested="promote", actor=actor)
    _inject(fail_at, "after_verify")
    current = read_pointer(lake)
    entries, _ = _read_history(lake)
    _reconcile(lake, current, entries)
    if current is not None and current.get("version") == version:
        return current
    pointer = _flip(lake, manifest, current, action="promote", reason=reason, actor=actor)
    _inject(fail_at, "after_flip")
    _append(lake, {**_flip_entry(pointer), **extra})
    _inject(fail_at, "after_history")
    return pointer


def rollback(
    lake: Lake, to_version: str | None = None, *, reason: str = "manual rollback", actor: str = "cli"
) -> dict[str, Any]:
    """Flip the pointer back to `to_version`, or to the version in effect before the current one.

    The target must have been promoted before (rolling forward to a never-promoted bundle
    would bypass the gate) and must verify. Returns the new pointer.
    """
    current = read_pointer(lake)
    if current is None:
        raise PromotionError(f"nothing is promoted in {lake.uri}: nothing to roll back")
    entries, _ = _read_history(lake)
    entries = _reconcile(lake, current, entries)
    stack = _promotion_stack(entries)
    cur_version = current.get("version")
    if to_version is None:
        earlier = [v for v in stack[:-1] if v != cur_version] if stack and stack[-1] == cur_version else []
        if not earlier:
            raise PromotionError(f"no version was promoted before {cur_version}: nothing to roll back to")
        target = earlier[-1]
    else:
        target = check_version(to_version)
        if target == cur_version:
            raise PromotionError(f"{target} is already promoted")
        ever = {e.get("version") for e in entries if e.get("action") in FLIP_ACTIONS}
        if target not in ever:
            raise PromotionError(f"{target} was never promoted: deploy a new bundle through promote(), not rollback")
    manifest = _verify_or_refuse(lake, target, requested="rollback", actor=actor)
    pointer = _flip(lake, manifest, current, action="rollback", reason=reason, actor=actor)
    _append(lake, _flip_entry(pointer))
    return pointer


# --- status ----------------------------------------------------------------------------


def _version_info(lake: Lake, version: str, keys: set[str]) -> dict[str, Any]:
    """Complete = a parseable manifest naming this version whose files are all present."""
    prefix = bundle_prefix(version)
    info: dict[str, Any] = {"version": version, "created_at": None, "complete": False, "problem": None}
    if f"{prefix}/{MANIFEST}" not in keys:
        info["problem"] = "no manifest (incomplete write)"
        return info
    try:
        m = Manifest.parse(lake.get_bytes(f"{prefix}/{MANIFEST}"))
    except (BundleError, LakeError, ValueError) as exc:
        info["problem"] = f"unreadable manifest: {exc}"
        return info
    info["created_at"] = m.raw.get("created_at")
    missing = [n for n in m.files if f"{prefix}/{n}" not in keys]
    if m.version != version:
        info["problem"] = f"manifest names version {m.version}"
    elif missing:
        info["problem"] = f"missing files: {missing}"
    else:
        info["complete"] = True
    return info


def status(lake: Lake, last: int = 10, *, verify_promoted: bool = True) -> dict[str, Any]:
    """Where production stands: pointer, versions, recent history, and any inconsistency.

    `verify_promoted` re-checks the promoted bundle's checksums (downloads it once).
    """
    problems: list[str] = []
    pointer = read_pointer(lake)
    keys = set(lake.list_keys(MODELS))
    versions = [_version_info(lake, v, keys) for v in list_versions(lake)]
    entries, bad_lines = _read_history(lake)
    problems.extend(bad_lines)
    gap = _history_gap(pointer, entries)
    if gap:
        problems.append(gap)
    if pointer is None and any(e.get("action") in FLIP_ACTIONS for e in entries):
        problems.append("history records flips but promoted/manifest.json is missing")
    if pointer is not None and verify_promoted:
        try:
            verify_bundle(lake, str(pointer.get("version")))
        except BundleError as exc:
            problems.append(f"promoted bundle does not verify: {exc}")
    return {
        "promoted": pointer,
        "versions": versions,
        "history": entries[-last:] if last > 0 else [],
        "consistent": not problems,
        "problems": problems,
    }


_KEY_METRICS = ("recall@20", "recall@10", "ndcg@10", "mrr", "coverage@10", "popularity_bias@10")


def _metric_line(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    # Flat numeric metrics, or a nested {"candidate": {...}} as the evaluation writes them.
    flat = metrics.get("candidate") if isinstance(metrics.get("candidate"), dict) else metrics
    numeric = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys = [k for k in _KEY_METRICS if k in numeric] or sorted(numeric)[:8]
    line = ", ".join(f"{k}={numeric[k]:.4f}" for k in keys)
    baselines = metrics.get("baselines") if isinstance(metrics.get("baselines"), dict) else {}
    recalls = {
        name: m["recall@20"]
        for name, m in baselines.items()
        if name != "champion" and isinstance(m, dict) and isinstance(m.get("recall@20"), (int, float))
    }
    if recalls:
        best = max(recalls, key=lambda name: recalls[name])
        line += f" (strongest baseline {best} recall@20={recalls[best]:.4f})"
    return line


def format_status(st: dict[str, Any]) -> str:
    """Human-readable text for `recsys status`."""
    lines: list[str] = []
    p = st.get("promoted")
    if p is None:
        lines.append("promoted: none (nothing was ever promoted)")
    else:
        promo = p.get("promotion") or {}
        lines.append(f"promoted: {p.get('version')}")
        lines.append(
            f"  since {p.get('promoted_at')} by {promo.get('actor', '?')} ({promo.get('action', '?')}): "
            f"{promo.get('reason', '')}"
        )
        lines.append(f"  previous: {p.get('previous_version') or '-'}")
        lines.append(f"  embedding_dim={p.get('embedding_dim')} index_type={p.get('index_type')}")
        metrics = _metric_line(p.get("metrics"))
        if metrics:
            lines.append(f"  metrics: {metrics}")
    versions = st.get("versions", [])
    lines.append(f"versions ({len(versions)}):")
    promoted_version = p.get("version") if p else None
    for v in versions:
        mark = "*" if v["version"] == promoted_version else " "
        state = "complete" if v["complete"] else f"INCOMPLETE ({v.get('problem')})"
        lines.append(f" {mark} {v['version']}  created {v.get('created_at') or '-'}  {state}")
    history = st.get("history", [])
    lines.append(f"last {len(history)} decisions:")
    for e in history:
        week = f" week {e['week']}" if e.get("week") else ""
        lines.append(
            f"  {e.get('at', '?')}  {e.get('action', '?'):<9} {e.get('version') or '-'}{week}  "
            f"[{e.get('actor', '?')}] {e.get('reason', '')}"
        )
        # A refusal is only useful with its reasons, one per failed rule.
        lines.extend(f"      - {r}" for r in e.get("reasons") or [])
    if st.get("consistent", True):
        lines.append("consistent: yes")
    else:
        lines.append("consistent: NO")
        lines.extend(f"  problem: {msg}" for msg in st.get("problems", []))
    return "\n".join(lines)
