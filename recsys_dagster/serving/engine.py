"""A loaded bundle that answers recommendation queries; no web framework involved.

The offline evaluation and the promotion gate call it on a staging directory; the HTTP app
calls it on the promoted bundle. Everything a request needs is precomputed at load time.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq

from recsys_dagster.bundle.format import MANIFEST, REQUIRED_FILES, BundleError
from recsys_dagster.contract import DEVICE_TYPES
from recsys_dagster.serving.catalog import Catalog, SeenSets, load_catalog, load_seen
from recsys_dagster.serving.ranker import Ranker, RankerError
from recsys_dagster.serving.rerank import Filters, apply_popularity_penalty, diversify, keep_mask, leaf_counts

DEFAULT_HISTORY_LEN = 50
DEFAULT_CANDIDATES = 500
# The tower's "unknown" rows (CONTRACTS `artifacts`), trained by context dropout: a request
# without device or hour uses them; never the server's clock.
UNKNOWN_DEVICE = len(DEVICE_TYPES)  # 3
UNKNOWN_HOUR = 24
_DEVICE_INDEX = {d: i for i, d in enumerate(DEVICE_TYPES)}
TOWER_INPUTS = ("history_emb", "history_mask", "device", "hour")

# The only reasons a response may fall back (CONTRACT of the API and the metrics label set).
FALLBACK_REASONS = ("unknown_user", "empty_history", "unknown_items", "no_candidates")


@dataclass
class Recommendation:
    items: list[dict[str, Any]]
    model_version: str
    fallback: str | None  # one of FALLBACK_REASONS
    source: str  # "realtime" | "stored_history" | "popularity"
    unknown_items: list[str] = field(default_factory=list)
    topped_up: int = 0  # trailing items filled from popularity because too few candidates survived


def _set_index_params(index: faiss.Index, params: dict[str, Any]) -> None:
    space = faiss.ParameterSpace()
    for name in ("efSearch", "nprobe"):
        if name in params:
            try:
                space.set_index_parameter(index, name, int(params[name]))
            except RuntimeError as exc:
                raise BundleError(f"index parameter {name}={params[name]} does not apply: {exc}") from exc


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    if names != set(TOWER_INPUTS) or [o.name for o in sess.get_outputs()] != ["user_vec"]:
        raise BundleError(
            f"user_tower.onnx has inputs {sorted(names)} / outputs {[o.name for o in sess.get_outputs()]}, "
            f"contract says {list(TOWER_INPUTS)} -> ['user_vec']"
        )
    return sess


class Engine:
    """Bundle -> recommendations. Thread-safe for concurrent reads (nothing mutates after load)."""

    def __init__(
        self,
        *,
        version: str,
        session: ort.InferenceSession,
        index: faiss.Index,
        catalog: Catalog,
        embeddings: np.ndarray,
        histories: dict[str, list[str]],
        seen: SeenSets | None = None,
        history_len: int = DEFAULT_HISTORY_LEN,
        candidates: int = DEFAULT_CANDIDATES,
        manifest: dict[str, Any] | None = None,
        ranker: Ranker | None = None,
    ):
        if embeddings.ndim != 2 or embeddings.shape[0] != catalog.n_items:
            raise BundleError(
                f"item_embeddings.npy has shape {embeddings.shape}, items.parquet has {catalog.n_items} rows"
            )
        if index.d != embeddings.shape[1]:
            raise BundleError(f"index dimension {index.d} != embedding dimension {embeddings.shape[1]}")
        self.version = version
        self.session = session
        self.index = index
        self.catalog = catalog
        self.embeddings = embeddings
        self.histories = histories
        self.seen = seen if seen is not None else SeenSets.empty()
        self.history_len = history_len
        self.candidates = candidates
        self.manifest = manifest or {}
        self.ranker = ranker
        self.n_items = catalog.n_items
        self.dim = int(embeddings.shape[1])

    @classmethod
    def from_dir(
        cls,
        path: Path,
        version: str | None = None,
        *,
        candidates: int = DEFAULT_CANDIDATES,
        threads: int = 1,
    ) -> Engine:
        """Load the bundle files of `path` (manifest.json and index.json optional).

        `user_seen.parquet` may be missing from a bundle written before it existed (empty
        seen-sets), unless the bundle's manifest lists it."""
        path = Path(path)
        manifest: dict[str, Any] = {}
        if (path / MANIFEST).is_file():
            manifest = json.loads((path / MANIFEST).read_text())
        expected = [*REQUIRED_FILES, *(n for n in manifest.get("files") or {} if n not in REQUIRED_FILES)]
        missing = [n for n in expected if not (path / n).is_file()]
        if missing:
            raise BundleError(f"{path} lacks bundle files {missing}")
        index_meta: dict[str, Any] = {}
        if (path / "index.json").is_file():
            index_meta = json.loads((path / "index.json").read_text())
        version = version or manifest.get("version") or path.name
        try:
            faiss.omp_set_num_threads(threads)
            session = _session(path / "user_tower.onnx", threads)
            index = faiss.read_index(str(path / "item_index.faiss"))
            params = {
                **(index_meta.get("params") or index_meta.get("parameters") or {}),
                **(manifest.get("index_params") or {}),
            }
            _set_index_params(index, params)
            catalog = load_catalog(path / "items.parquet", path / "popular.json")
            embeddings = np.load(path / "item_embeddings.npy", allow_pickle=False)
            if embeddings.dtype != np.float32:
                raise BundleError(f"item_embeddings.npy is {embeddings.dtype}, contract says float32")
            hist = pq.read_table(path / "user_histories.parquet", columns=["user_id", "history"])
            histories = {
                u: h or [] for u, h in zip(hist.column("user_id").to_pylist(), hist.column("history").to_pylist())
            }
            seen = load_seen(path / "user_seen.parquet", catalog)
            ranker = Ranker.from_dir(path, catalog.n_items, threads)
        except RankerError as exc:
            raise BundleError(f"bundle {version!r}: {exc}") from exc
        except BundleError:
            raise
        except Exception as exc:  # onnxruntime, faiss and pyarrow raise their own types
            raise BundleError(f"cannot load bundle {version!r} from {path}: {type(exc).__name__}: {exc}") from exc
        history_len = int(manifest.get("history_len") or index_meta.get("history_len") or DEFAULT_HISTORY_LEN)
        engine = cls(
            version=version,
            session=session,
            index=index,
            catalog=catalog,
            embeddings=embeddings,
            histories=histories,
            seen=seen,
            history_len=history_len,
            candidates=candidates,
            manifest=manifest,
            ranker=ranker,
        )
        engine._self_check()
        return engine

    def _self_check(self) -> None:
        """Run the tower once, with the unknown device and hour, so a model that loads but
        cannot run (or has no unknown context rows) is refused at load time."""
        try:
            vec, _ = self.user_vectors([[]], [None], [None])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"user tower of {self.version!r} fails on a sample input: {exc}") from exc
        if vec.shape != (1, self.dim):
            raise BundleError(f"user tower of {self.version!r} returns shape {vec.shape}, expected (1, {self.dim})")

    # vectors and search --------------------------------------------------------------
    def user_vectors(
        self,
        histories: list[list[str]],
        devices: list[str | None] | None = None,
        hours: list[int | None] | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """User vectors [B, dim]; unknown ids per row.

        A history is oldest first, most recent last, as in training: repeated ids count at
        their last position, ids not in the catalog are skipped, and the last `history_len`
        known items feed the tower. A missing or unrecognised device and a missing hour
        are the tower's unknown context; an hour outside 0..23 is an error."""
        b = len(histories)
        rows_per_user: list[list[int]] = []
        unknown: list[list[str]] = []
        for h in histories:
            rows, miss = self.catalog.rows_of(h)
            rows_per_user.append(_last_distinct(rows, self.history_len))
            unknown.append(miss)
        length = max(1, max((len(r) for r in rows_per_user), default=0))
        emb = np.zeros((b, length, self.dim), dtype=np.float32)
        mask = np.zeros((b, length), dtype=np.float32)
        for i, rows in enumerate(rows_per_user):
            if rows:
                emb[i, length - len(rows) :] = self.embeddings[rows]
                mask[i, length - len(rows) :] = 1.0
        device = np.array(
            [_DEVICE_INDEX.get(d, UNKNOWN_DEVICE) if d else UNKNOWN_DEVICE for d in (devices or [None] * b)],
            dtype=np.int64,
        )
        for h in hours or []:
            _check_hour(h)
        hour_list = [UNKNOWN_HOUR if h is None else int(h) for h in (hours or [None] * b)]
        if len(device) != b or len(hour_list) != b:
            raise ValueError("devices and hours must have one entry per history")
        (vec,) = self.session.run(
            ["user_vec"],
            {"history_emb": emb, "history_mask": mask, "device": device, "hour": np.array(hour_list, dtype=np.int64)},
        )
        return vec, unknown

    def search(self, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n (scores, item rows) per vector; rows are -1 where the index has fewer hits."""
        n = max(1, min(n, self.index.ntotal))
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), n)

    def stored_history(self, user_id: str) -> list[str] | None:
        return self.histories.get(user_id)

    def seen_rows(self, user_id: str, recent_items: list[str] | None = None) -> np.ndarray:
        """Item rows never recommended to `user_id` again: the bundle's seen-set of a known
        user, their stored history, and the request's `recent_items`."""
        extra, _ = self.catalog.rows_of([*(self.histories.get(user_id) or []), *(recent_items or [])])
        return np.concatenate([self.seen.rows_for(user_id).astype(np.int64), np.asarray(extra, dtype=np.int64)])

    def without_ranker(self) -> Engine:
        """The same bundle answering from the two-tower index alone (the evaluation's
        `two_tower` system)."""
        plain = copy.copy(self)
        plain.ranker = None
        return plain

    def profile_rows(self, user_id: str, recent_items: list[str] | None = None) -> np.ndarray:
        """The user's distinct item rows, oldest first, each at its last position: the
        bundle's seen-set (stored most recent first), the stored history, then the
        request's `recent_items`. The ranking stage's item-item sources read it."""
        stored, _ = self.catalog.rows_of([*(self.histories.get(user_id) or []), *(recent_items or [])])
        rows = [*self.seen.rows_for(user_id)[::-1].tolist(), *stored]
        return np.array(_last_distinct(rows, len(rows)), dtype=np.int64)

    def ann_depth(self, n_excluded: int) -> int:
        """How deep the index is searched: deeper by the excluded items, so a heavy user's
        seen-set cannot eat the candidates (the offline evaluation searches the same way)."""
        wanted = self.ranker.spec.depth["two_tower"] if self.ranker is not None else self.candidates
        return wanted + n_excluded

    def rank(
        self,
        user_vec: np.ndarray,
        ann_scores: np.ndarray,
        ann_rows: np.ndarray,
        *,
        profile: np.ndarray,
        keep,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) best first for one user: the ranking stage over every candidate
        source when the bundle has a ranker, else the index's answer. `keep(rows)` says
        which rows may be recommended."""
        if self.ranker is not None:
            return self.ranker.rank(
                user_vec=user_vec, embeddings=self.embeddings, ann_rows=ann_rows, profile=profile, keep=keep
            )
        valid = ann_rows >= 0
        rows, scores = ann_rows[valid].astype(np.int64), ann_scores[valid].astype(np.float64)
        kept = keep(rows)
        return rows[kept], scores[kept]

    # recommendations -------------------------------------------------------------------
    def recommend(
        self,
        user_id: str,
        recent_items: list[str] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        filters: Filters | None = None,
        diversity_cap: int | None = 3,
        popularity_penalty: float = 0.0,
        device: str | None = None,
        hour: int | None = None,
    ) -> Recommendation:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if diversity_cap is not None and diversity_cap < 1:
            raise ValueError(f"diversity_cap must be >= 1 or None, got {diversity_cap}")
        if popularity_penalty < 0:
            raise ValueError(f"popularity_penalty must be >= 0, got {popularity_penalty}")
        _check_hour(hour)
        stored = self.histories.get(user_id)
        realtime = bool(recent_items)
        history = list(recent_items) if realtime else (stored or [])
        exclude = self.seen_rows(user_id, recent_items) if exclude_seen else None

        fallback: str | None = None
        unknown: list[str] = []
        if realtime:
            _, unknown = self.catalog.rows_of(history)
            if len(unknown) == len(history):
                fallback = "unknown_items"
        elif stored is None:
            fallback = "unknown_user"
        elif not stored:
            fallback = "empty_history"
        source = "realtime" if realtime else "stored_history"

        rows: list[int] = []
        scores: list[float] = []
        if fallback is None:
            vec, _ = self.user_vectors([history], [device], [hour])
            cand_scores, cand_rows = self.search(vec, self.ann_depth(0 if exclude is None else len(exclude)))
            cand_rows, cand_scores = self.rank(
                vec[0],
                cand_scores[0],
                cand_rows[0],
                profile=self.profile_rows(user_id, recent_items) if self.ranker is not None else _NO_ROWS,
                keep=lambda rows: keep_mask(self.catalog, rows, filters, exclude),
            )
            cand_rows, cand_scores = apply_popularity_penalty(self.catalog, cand_rows, cand_scores, popularity_penalty)
            rows, scores = diversify(self.catalog, cand_rows, cand_scores, k, diversity_cap)
            if not rows:
                fallback = "no_candidates"
        if fallback is not None:
            source = "popularity"
        n_model = len(rows)
        if len(rows) < k:
            extra_rows, extra_scores = self._popular(k - len(rows), filters, exclude, diversity_cap, rows)
            rows += extra_rows
            scores += extra_scores
        return Recommendation(
            items=self.catalog.hydrate(rows, scores),
            model_version=self.version,
            fallback=fallback,
            source=source,
            unknown_items=unknown,
            topped_up=len(rows) - n_model if fallback is None else 0,
        )

    def _popular(
        self,
        n: int,
        filters: Filters | None,
        exclude: np.ndarray | None,
        cap: int | None,
        taken: list[int],
    ) -> tuple[list[int], list[float]]:
        """The next `n` popular items that pass the filters and are not in `taken`: those
        within the per-leaf cap first, then (cap relaxed) the next popular ones."""
        rows, scores = self._popular_pass(n, filters, exclude, cap, taken)
        if cap is not None and len(rows) < n:
            more_rows, more_scores = self._popular_pass(n - len(rows), filters, exclude, None, taken + rows)
            rows, scores = rows + more_rows, scores + more_scores
        return rows, scores

    def _popular_pass(
        self,
        n: int,
        filters: Filters | None,
        exclude: np.ndarray | None,
        cap: int | None,
        taken: list[int],
    ) -> tuple[list[int], list[float]]:
        cat = self.catalog
        skip = (
            np.array(taken, dtype=np.int64)
            if exclude is None
            else np.concatenate([exclude, np.array(taken, dtype=np.int64)])
        )
        counts = leaf_counts(cat, taken)
        out_rows: list[int] = []
        out_scores: list[float] = []
        chunk = 1024
        for start in range(0, cat.popular_rows.size, chunk):
            rows = cat.popular_rows[start : start + chunk]
            keep = keep_mask(cat, rows, filters, skip)
            r, s = diversify(
                cat,
                rows[keep],
                cat.popular_scores[start : start + chunk][keep],
                n - len(out_rows),
                cap,
                counts,
                relax=False,
            )
            out_rows += r
            out_scores += s
            if len(out_rows) >= n:
                break
        return out_rows, out_scores

    def similar(self, item_id: str, k: int = 10) -> list[dict[str, Any]]:
        """Nearest active items to `item_id` by embedding (itself excluded). KeyError if unknown."""
        row = self.catalog.row_of.get(item_id)
        if row is None:
            raise KeyError(item_id)
        scores, rows = self.search(self.embeddings[row : row + 1], k + 1)
        rows, scores = rows[0], scores[0]
        keep = (rows >= 0) & (rows != row)
        rows, scores = rows[keep], scores[keep]
        keep = self.catalog.active[rows]
        return self.catalog.hydrate(rows[keep][:k], scores[keep][:k])


_NO_ROWS = np.zeros(0, dtype=np.int64)


def _check_hour(hour: object) -> None:
    """None (unknown) or an integer hour of the day, 0..23 UTC."""
    if hour is None:
        return
    if isinstance(hour, bool) or not isinstance(hour, int | np.integer) or not 0 <= hour <= 23:
        raise ValueError(f"hour must be an integer in 0..23 or None, got {hour!r}")


def _last_distinct(rows: list[int], n: int) -> list[int]:
    """The last `n` distinct rows, oldest first, each at its last position (as training's
    histories: `spark/training.py:_last_distinct`)."""
    out: list[int] = []
    taken: set[int] = set()
    for r in reversed(rows):
        if r not in taken:
            taken.add(r)
            out.append(r)
            if len(out) == n:
                break
    return out[::-1]
