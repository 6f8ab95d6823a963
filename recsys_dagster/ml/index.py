"""The item index: FAISS over L2-normalised item embeddings, inner-product metric.

The index type follows the catalog size (exact below ~100k, HNSW up to ~5M, IVF-PQ above)
and its recall@10 against exact search is measured, so a bad approximation is visible in
`index.json` instead of silently costing recommendations. numpy + faiss only: the serving
process imports this module.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys_dagster.records import Record

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
HNSW_MAX_ITEMS = 5_000_000
HNSW_PARAMS = {"M": 32, "efConstruction": 200, "efSearch": 128}
# IVF-PQ search knobs tried by `tune_ivfpq`, cheapest first (see `_ivfpq_cost`).
NPROBE_LADDER = (4, 8, 16, 32, 64, 128, 256)
K_FACTOR_LADDER = (4, 8, 16, 32, 64, 128, 256)
# k-means wants >= 39 points per centroid (faiss warns below); more only costs time.
TRAIN_POINTS_PER_LIST = 40
# Coarse k-means iterations: nprobe is tuned afterwards, so a rougher partition costs a
# little search time, not recall, and training is the longest step of the build.
COARSE_KMEANS_ITERS = 10
TUNE_MARGIN = 0.01


@dataclass
class IndexSpec:
    kind: str  # "flat" | "hnsw" | "ivfpq"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; expected one of {KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexReport(Record):
    """What `build_and_report` measured: written as the week's `index.json`, read by the
    index check and the bundle assembly."""

    kind: str
    params: dict[str, Any]
    n_items: int
    dim: int
    device: str
    build_seconds: float
    k: int
    recall: float  # recall@k against exact search on sampled queries
    recall_queries: int
    target_recall: float
    meets_target: bool
    eval_seconds: float
    faiss_version: str

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.kind, dict(self.params))


def choose_index(n_items: int, dim: int, exact_below: int = 100_000) -> IndexSpec:
    """Exact search while it is cheap; a graph index to ~5M items; compressed lists above."""
    if n_items < 0 or dim <= 0:
        raise ValueError(f"invalid catalog shape: n_items={n_items}, dim={dim}")
    if n_items < exact_below:
        return IndexSpec("flat", {})
    if n_items <= HNSW_MAX_ITEMS:
        return IndexSpec("hnsw", dict(HNSW_PARAMS))
    nlist = max(1, int(round(4 * math.sqrt(n_items))))
    # PQ codes alone cap recall@10 far below 0.95 at 8 dims per sub-quantizer, so the
    # candidates are re-ranked against fp16 copies of the vectors (half the memory of
    # float32, practically exact); nprobe and k_factor are then tuned to the target.
    return IndexSpec(
        "ivfpq",
        {"nlist": nlist, "m": _pq_m(dim), "nbits": 8, "refine": "fp16", "nprobe": 16, "k_factor": 8},
    )


def _pq_m(dim: int) -> int:
    """~8 dimensions per sub-quantizer; m must divide dim."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def _prepare(vectors: np.ndarray, what: str) -> np.ndarray:
    """float32, C-contiguous, L2-normalised copy; zero or non-finite rows are an error."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} rows with NaN/inf, e.g. row {int(np.flatnonzero(bad)[0])}")
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{what}: {int(zero.sum())} zero vectors, e.g. row {int(np.flatnonzero(zero)[0])}")
    x /= norms[:, None]
    return x


def _prepare_ids(ids: np.ndarray, n: int) -> np.ndarray:
    out = np.asarray(ids)
    if out.ndim != 1 or len(out) != n:
        raise ValueError(f"ids must be 1-d with one id per vector ({n}), got shape {out.shape}")
    if len(out) and not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {out.dtype}")
    out = out.astype(np.int64, copy=False)
    if len(out) and out.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks 'no result' in FAISS answers)")
    if len(np.unique(out)) != len(out):
        raise ValueError("ids must be unique")
    return np.ascontiguousarray(out)


def _new_cpu_index(spec: IndexSpec, dim: int) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "hnsw":
        p = {**HNSW_PARAMS, **spec.params}
        index = faiss.IndexHNSWFlat(dim, int(p["M"]), ip)
        index.hnsw.efConstruction = int(p["efConstruction"])
        index.hnsw.efSearch = int(p["efSearch"])
        return index
    p = spec.params
    if dim % int(p["m"]):
        raise ValueError(f"ivfpq: m={p['m']} must divide dim={dim}")
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, int(p["nlist"]), int(p["m"]), int(p["nbits"]), ip)
    index.cp.niter = COARSE_KMEANS_ITERS
    return index


def _refine_index(spec: IndexSpec, dim: int) -> faiss.Index:
    kind = spec.params.get("refine", "fp16")
    if kind == "fp16":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    raise ValueError(f"ivfpq: unknown refine {kind!r}; expected 'fp16' or 'flat'")


def _train_sample(x: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    n_train = min(len(x), max(TRAIN_POINTS_PER_LIST * nlist, 10_000))
    if n_train == len(x):
        return x
    rows = np.sort(np.random.default_rng(seed).choice(len(x), n_train, replace=False))
    return x[rows]


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    spec: IndexSpec | None = None,
    use_gpu: bool | None = None,
    stats: dict[str, Any] | None = None,
) -> faiss.Index:
    """A CPU `IndexIDMap2` over `vectors` (normalised here) answering with `ids`.

    GPU (when faiss sees one and `use_gpu` is not False) trains the IVF-PQ quantizers, the
    expensive part; flat needs no training and FAISS has no GPU HNSW builder, so those are
    built on CPU. The result is always a CPU index, so it can be written. `stats`, when
    given, receives kind, params, n_items, dim, device and build_seconds.
    """
    x = _prepare(vectors, "vectors")
    row_ids = _prepare_ids(ids, len(x))
    n, dim = x.shape
    spec = spec or choose_index(n, dim)
    if use_gpu and faiss.get_num_gpus() == 0:
        raise RuntimeError("use_gpu=True but this faiss build sees no GPU")
    gpu = use_gpu is not False and faiss.get_num_gpus() > 0 and spec.kind == "ivfpq"
    t0 = time.perf_counter()
    inner = _new_cpu_index(spec, dim)
    if spec.kind == "ivfpq":
        if n < int(spec.params["nlist"]):
            raise ValueError(f"ivfpq needs at least nlist={spec.params['nlist']} vectors, got {n}")
        sample = _train_sample(x, int(spec.params["nlist"]))
        if gpu:
            res = faiss.StandardGpuResources()
            on_gpu = faiss.index_cpu_to_gpu(res, 0, inner)
            on_gpu.train(sample)
            inner = faiss.index_gpu_to_cpu(on_gpu)
        else:
            inner.train(sample)
        inner.nprobe = int(spec.params["nprobe"])
        refined = faiss.IndexRefine(inner, _refine_index(spec, dim))
        refined.k_factor = float(spec.params["k_factor"])
        inner = refined
    # faiss's Python constructors keep the wrapped sub-indexes alive (referenced_objects).
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(x, row_ids)
    seconds = time.perf_counter() - t0
    log.info("built %s index over %d x %d in %.2fs (%s)", spec.kind, n, dim, seconds, "gpu" if gpu else "cpu")
    if stats is not None:
        stats.update(
            kind=spec.kind,
            params=dict(spec.params),
            n_items=n,
            dim=dim,
            device="gpu" if gpu else "cpu",
            build_seconds=round(seconds, 4),
        )
    return index


def save_index(index: faiss.Index, path: str | Path) -> None:
    """FAISS's own binary format (no pickle)."""
    faiss.write_index(index, str(path))


def load_index(path: str | Path) -> faiss.Index:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no FAISS index at {path}")
    return faiss.read_index(str(path))


def index_to_bytes(index: faiss.Index) -> bytes:
    """The same bytes `save_index` writes, for `Lake.put_bytes` (local or S3)."""
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes) -> faiss.Index:
    if not data:
        raise ValueError("empty FAISS index bytes")
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Set efSearch (HNSW) or nprobe/k_factor (IVF-PQ) through any IDMap/Refine wrapper.

    They are also stored in the index file, so a loaded index already searches with the
    values it was written with; this is for overriding them (tuning, serving config).
    """
    ps = faiss.ParameterSpace()
    names = {"hnsw": {"efSearch": "efSearch"}, "ivfpq": {"nprobe": "nprobe", "k_factor": "k_factor_rf"}}
    for key, faiss_name in names.get(spec.kind, {}).items():
        if key in spec.params:
            ps.set_index_parameter(index, faiss_name, float(spec.params[key]))


def search(
    index: faiss.Index, queries: np.ndarray, k: int, spec: IndexSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [q, k] float32, ids [q, k] int64); id -1 where fewer than k items exist."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != index.d:
        raise ValueError(f"queries must have shape [n, {index.d}], got {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN/inf")
    if spec is not None:
        apply_search_params(index, spec)
    return index.search(q, k)


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k ids by inner product over normalised vectors (the ground truth)."""
    x = _prepare(vectors, "vectors")
    row_ids = _prepare_ids(ids, len(x))
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.where(rows >= 0, row_ids[np.maximum(rows, 0)], -1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ignoring -1 padding)."""
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    n_true = np.maximum((truth >= 0).sum(axis=1), 1)
    return float((hits.any(axis=1).sum(axis=1) / n_true).mean())


def recall_vs_exact(
    index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10
) -> float:
    """Mean recall@k of `index` against exact search on the same vectors and queries."""
    truth = exact_topk(vectors, ids, queries, k)
    _, found = search(index, queries, k)
    return _recall(found, truth)


def sample_queries(vectors: np.ndarray, n: int = 1000, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """Item vectors nudged by a random perturbation of norm ~`noise`, renormalised.

    Real queries (user vectors) land near items rather than on them; querying with exact
    item vectors would flatter an ANN index (the item itself is trivially found).
    """
    x = _prepare(vectors, "vectors")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(x), size=n)
    q = x[rows] + (noise / math.sqrt(x.shape[1])) * rng.standard_normal((n, x.shape[1])).astype(np.float32)
    return _prepare(q, "queries")


def _ivfpq_cost(nprobe: int, k_factor: int, n: int, nlist: int, m: int, dim: int, k: int) -> float:
    """Rough per-query work: PQ table look-ups over the probed lists + exact re-ranking."""
    return nprobe * (n / nlist) * m + k * k_factor * dim


def tune_ivfpq(
    index: faiss.Index,
    spec: IndexSpec,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    target_recall: float = 0.95,
) -> tuple[IndexSpec, float]:
    """Cheapest (nprobe, k_factor) reaching `target_recall`, set on the index.

    Falls back to the best combination seen when none reaches the target; the caller sees
    the recall it got and decides (the index asset check blocks on it).
    """
    if spec.kind != "ivfpq":
        raise ValueError(f"tune_ivfpq needs an ivfpq spec, got {spec.kind!r}")
    truth = exact_topk(vectors, ids, queries, k)
    nlist, m, n, dim = int(spec.params["nlist"]), int(spec.params["m"]), index.ntotal, index.d
    grid = [(p, f) for p in NPROBE_LADDER if p <= nlist for f in K_FACTOR_LADDER]
    grid.sort(key=lambda pf: _ivfpq_cost(pf[0], pf[1], n, nlist, m, dim, k))
    best: tuple[float, IndexSpec] | None = None
    for nprobe, k_factor in grid:
        trial = IndexSpec("ivfpq", {**spec.params, "nprobe": nprobe, "k_factor": k_factor})
        _, found = search(index, queries, k, trial)
        got = _recall(found, truth)
        if best is None or got > best[0]:
            best = (got, trial)
        if got >= target_recall:
            return trial, got
    assert best is not None
    apply_search_params(index, best[1])
    return best[1], best[0]


def build_and_report(
    vectors: np.ndarray,
    ids: np.ndarray,
    spec: IndexSpec | None = None,
    use_gpu: bool | None = None,
    k: int = 10,
    n_queries: int = 1000,
    target_recall: float = 0.95,
    seed: int = 0,
) -> tuple[faiss.Index, IndexReport]:
    """Build, tune (IVF-PQ), and measure: the index and its report (the final spec in it)."""
    stats: dict[str, Any] = {}
    x = _prepare(vectors, "vectors")
    spec = spec or choose_index(*x.shape)
    index = build_index(x, ids, spec, use_gpu=use_gpu, stats=stats)
    queries = sample_queries(x, n=n_queries, seed=seed)
    if spec.kind == "ivfpq":
        # Tune on one query sample and report on another, so the figure is not fitted.
        # The margin keeps the held-out figure above the target despite sampling noise.
        tune_q = sample_queries(x, n=min(n_queries, 500), seed=seed + 1)
        spec, _ = tune_ivfpq(index, spec, x, ids, tune_q, k=k, target_recall=min(1.0, target_recall + TUNE_MARGIN))
    t0 = time.perf_counter()
    recall = recall_vs_exact(index, x, ids, queries, k=k)
    report = IndexReport(
        kind=spec.kind,
        params=dict(spec.params),
        n_items=int(stats["n_items"]),
        dim=int(stats["dim"]),
        device=str(stats["device"]),
        build_seconds=float(stats["build_seconds"]),
        k=k,
        recall=round(recall, 5),
        recall_queries=n_queries,
        target_recall=target_recall,
        meets_target=recall >= target_recall,
        eval_seconds=round(time.perf_counter() - t0, 4),
        faiss_version=faiss.__version__,
    )
    return index, report
