"""Item index: exact search (IndexFlatIP) beside the ANN index `choose_index` picks.

Clustered, L2-normalised vectors (Gaussian mixture, 1000 centres) stand in for item
embeddings. For each catalog size, in one run: build time, batch throughput (queries/s),
single-query latency p50/p95, and recall@10 against exact search on the same queries.
HNSW uses the production parameters (M=32, efConstruction=200, efSearch=128); IVF-PQ
(at 1M) is tuned by `tune_ivfpq` on separate queries to reach recall 0.96 first.

    .venv/bin/python bench/index.py --sizes 100000,1000000 --out bench/results/index.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_dagster.ml.index import (  # noqa: E402
    TUNE_MARGIN,
    IndexSpec,
    build_index,
    choose_index,
    sample_queries,
    search,
    tune_ivfpq,
)
from tests.synthetic import synthetic_clustered  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "index.json"
K = 10


def machine_info(threads: int) -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = platform.processor()
    if cpuinfo.exists():
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")), cpu
        )
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "faiss_threads": threads,
        "gpus_seen_by_faiss": faiss.get_num_gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "note": "2 cores shared with other work; timings are indicative",
    }


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def index_bytes(index: faiss.Index) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "i.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size


def measure(
    name: str,
    index: faiss.Index,
    build_s: float,
    build_cpu_s: float,
    queries: np.ndarray,
    single: np.ndarray,
    truth: np.ndarray | None,
) -> tuple[dict, np.ndarray]:
    t = time.perf_counter()
    _, found = search(index, queries, K)
    batch_s = time.perf_counter() - t
    # One request = one thread in the serving process; OpenMP hand-offs would dominate.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    lat = np.empty(len(single))
    for i in range(len(single)):
        t = time.perf_counter()
        search(index, single[i : i + 1], K)
        lat[i] = time.perf_counter() - t
    faiss.omp_set_num_threads(threads)
    row = {
        "index": name,
        "build_s": round(build_s, 2),
        "build_cpu_s": round(build_cpu_s, 2),
        "index_mb": round(index_bytes(index) / 2**20, 1),
        "batch_queries": len(queries),
        "batch_qps": round(len(queries) / batch_s, 1),
        "single_p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "single_p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 3),
        f"recall@{K}": 1.0 if truth is None else round(recall(found, truth), 4),
    }
    print(
        f"  {name:<8} build {row['build_s']:>7}s (cpu {row['build_cpu_s']}s)  {row['batch_qps']:>9} q/s  "
        f"p50 {row['single_p50_ms']:>7} ms  "
        f"p95 {row['single_p95_ms']:>7} ms  recall@{K} {row[f'recall@{K}']}",
        flush=True,
    )
    return row, found


def timed_build(x: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> tuple[faiss.Index, float, float]:
    """The index, wall seconds and process CPU seconds (CPU time shows contention)."""
    stats: dict = {}
    cpu = time.process_time()
    index = build_index(x, ids, spec, stats=stats)
    return index, stats["build_seconds"], time.process_time() - cpu


def run_size(n: int, dim: int, centers: int, n_batch: int, n_single: int, ivfpq: bool, hnsw: bool = True) -> dict:
    print(f"n={n:,} dim={dim}", flush=True)
    t = time.perf_counter()
    x = synthetic_clustered(n, dim, n_centers=centers, spread=0.3, seed=n)
    ids = np.arange(n, dtype=np.int64)
    queries = sample_queries(x, n=n_batch, seed=1)
    single = queries[:n_single]
    print(f"  data in {time.perf_counter() - t:.1f}s (not timed below)", flush=True)
    rows = []

    flat, wall, cpu = timed_build(x, ids, IndexSpec("flat", {}))
    row, truth = measure("flat", flat, wall, cpu, queries, single, None)
    rows.append({**row, "params": {}})
    del flat

    if hnsw:
        hnsw_spec = choose_index(n, dim, exact_below=0)
        index, wall, cpu = timed_build(x, ids, hnsw_spec)
        row, _ = measure("hnsw", index, wall, cpu, queries, single, truth)
        rows.append({**row, "params": hnsw_spec.params})
        del index

    if ivfpq:
        big = choose_index(max(n, 10_000_000), dim)
        spec = IndexSpec("ivfpq", {**big.params, "nlist": int(round(4 * np.sqrt(n)))})
        index, wall, cpu = timed_build(x, ids, spec)
        t = time.perf_counter()
        tune_q = sample_queries(x, n=500, seed=2)  # separate from the measured queries
        spec, tuned_recall = tune_ivfpq(index, spec, x, ids, tune_q, k=K, target_recall=0.95 + TUNE_MARGIN)
        tune_s = time.perf_counter() - t
        row, _ = measure("ivfpq", index, wall, cpu, queries, single, truth)
        rows.append({**row, "params": spec.params, "tune_s": round(tune_s, 2), "tune_recall": round(tuned_recall, 4)})
        del index
    return {"n_items": n, "dim": dim, "centers": centers, "chosen": choose_index(n, dim).kind, "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--centers", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=2000, help="queries in the throughput batch")
    ap.add_argument("--single", type=int, default=300, help="one-at-a-time queries for latency")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--ivfpq-from", type=int, default=1_000_000, help="also bench IVF-PQ from this size")
    ap.add_argument("--no-hnsw", action="store_true", help="skip HNSW (its 1M build is the long step)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: list[dict] = []
    result: dict = {}
    for n in sizes:
        runs.append(
            run_size(n, args.dim, args.centers, args.batch, args.single, n >= args.ivfpq_from, not args.no_hnsw)
        )
        # Written after every size, so a long run that is stopped still leaves its figures.
        result = {
            "benchmark": "index",
            "created_at": datetime.now(UTC).isoformat(),
            "machine": machine_info(args.threads),
            "k": K,
            "queries": "item vectors perturbed by noise of norm ~0.05, renormalised (sample_queries)",
            "recall_vs": "IndexFlatIP on the same queries",
            "single_query_threads": 1,
            "wall_s": round(time.perf_counter() - started, 1),
            "complete": len(runs) == len(sizes),
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.out)

    print(
        f"\n{'n':>10} {'index':<6} {'build s':>8} {'cpu s':>8} {'MB':>7} {'batch q/s':>10} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'recall@10':>9}"
    )
    for run in runs:
        for r in run["results"]:
            print(
                f"{run['n_items']:>10,} {r['index']:<6} {r['build_s']:>8} {r['build_cpu_s']:>8} {r['index_mb']:>7} "
                f"{r['batch_qps']:>10} "
                f"{r['single_p50_ms']:>8} {r['single_p95_ms']:>8} {r[f'recall@{K}']:>9}"
            )
    print(f"\nwrote {args.out} ({result['wall_s']}s)")


if __name__ == "__main__":
    main()
