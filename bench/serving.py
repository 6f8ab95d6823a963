"""Serving benchmark: a promoted 1M-item bundle (dim 64, HNSW) with its ranking stage
(candidate sources + the ONNX LambdaRank ranker), the real service under uvicorn on
loopback, and an open-loop load generator at fixed request rates.

    .venv/bin/python bench/serving.py [--items 1000000] [--rates 100 250 500] [--seconds 12] [--no-ranker]

Before the load runs, the same request mix goes through the Engine in process with and
without its ranker, so the ranker's share of the per-request CPU is measured beside the
end-to-end figures.

The bundle and its index are built once and cached under `.recsys/bench/`. Results go to
`bench/results/serving.json` and a table on stdout. The load generator is a raw asyncio
HTTP/1.1 client (keep-alive connection pool) running on the same machine as the server, so
both share its cores: the figures are a lower bound of what the service does alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic bundle factory lives with the tests

import faiss  # noqa: E402
from bundle_factory import add_ranker, make_bundle_dir, write_and_promote  # noqa: E402

from recsys_dagster.bundle.format import read_pointer  # noqa: E402
from recsys_dagster.lake import Lake  # noqa: E402

BENCH_DIR = REPO / ".recsys" / "bench"
RESULTS = REPO / "bench" / "results" / "serving.json"
HNSW_M = 32
EF_CONSTRUCTION = 40
EF_SEARCH = 64


def hnsw_index(emb: np.ndarray, rows: np.ndarray) -> faiss.Index:
    inner = faiss.IndexHNSWFlat(emb.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = EF_CONSTRUCTION
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(emb[rows], rows.astype(np.int64))
    return index


def build_bundle(n_items: int, dim: int, n_users: int, n_clusters: int, ranker: bool) -> tuple[Path, dict]:
    """The bundle directory, built once (the HNSW build dominates) and reused; the ranked
    variant is the plain one plus the ranker files."""
    if ranker:
        plain, info = build_bundle(n_items, dim, n_users, n_clusters, ranker=False)
        out = plain.with_name(plain.name + "-ranker")
        info_path = out / "build.json"
        if info_path.is_file():
            return out, {**json.loads(info_path.read_text()), "cached": True}
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(plain, out)
        t = time.perf_counter()
        add_ranker(out, seed=7, n_clusters=n_clusters, neighbours=20, train_users=300, trees=100)
        info = {**info, "ranker": True, "ranker_build_s": round(time.perf_counter() - t, 1)}
        info["bundle_bytes"] = sum(p.stat().st_size for p in out.iterdir())
        info.pop("cached", None)
        info_path.write_text(json.dumps(info, indent=2))
        return out, {**info, "cached": False}
    out = BENCH_DIR / f"bundle-{n_items}-d{dim}-hnsw{HNSW_M}"
    info_path = out / "build.json"
    if info_path.is_file():
        return out, {**json.loads(info_path.read_text()), "cached": True}
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed_index(emb: np.ndarray, rows: np.ndarray) -> faiss.Index:
        t = time.perf_counter()
        index = hnsw_index(emb, rows)
        timings["index_build_s"] = round(time.perf_counter() - t, 1)
        return index

    make_bundle_dir(
        out,
        n_items=n_items,
        dim=dim,
        seed=7,
        n_clusters=n_clusters,
        n_users=n_users,
        n_popular=1000,
        build_index=timed_index,
        index_type="hnsw",
        index_params={"efSearch": EF_SEARCH},
    )
    info = {
        "n_items": n_items,
        "dim": dim,
        "n_users": n_users,
        "index": f"IDMap2(HNSWFlat M={HNSW_M}, efConstruction={EF_CONSTRUCTION}), efSearch={EF_SEARCH}, inner product",
        "index_build_threads": os.cpu_count(),
        **timings,
        "bundle_build_s": round(time.perf_counter() - started, 1),
        "bundle_bytes": sum(p.stat().st_size for p in out.iterdir()),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return out, {**info, "cached": False}


def stage_costs(bundle: Path, bodies: list[tuple[str, bytes]]) -> dict:
    """CPU per request of the same requests through the Engine with and without its
    ranker (one thread, as the server runs it), and the ranking stage's share."""
    from recsys_dagster.serving.engine import Engine

    engine = Engine.from_dir(bundle, threads=1)
    plain = engine.without_ranker()
    requests = [json.loads(b) for _, b in bodies]

    def run(e) -> float:
        for r in requests[:50]:  # warm-up
            e.recommend(r["user_id"], recent_items=r.get("recent_items"), k=r["k"], device=r.get("device"))
        start = time.process_time()
        for r in requests:
            e.recommend(r["user_id"], recent_items=r.get("recent_items"), k=r["k"], device=r.get("device"))
        return 1000 * (time.process_time() - start) / len(requests)

    with_ranker, without = run(engine), run(plain)
    return {
        "requests": len(requests),
        "with_ranker_ms": round(with_ranker, 3),
        "two_tower_only_ms": round(without, 3),
        "ranker_share": round(max(0.0, with_ranker - without) / with_ranker, 3) if with_ranker > 0 else None,
        "trees": engine.ranker.spec.n_trees if engine.ranker else None,
        "depth": engine.ranker.spec.depth if engine.ranker else None,
    }


def promote(bundle: Path) -> tuple[Lake, str]:
    lake = Lake.from_uri(f"file://{BENCH_DIR / 'lake'}")
    version = f"bench-{bundle.name}"
    pointer = read_pointer(lake)
    if not pointer or pointer.get("version") != version:
        write_and_promote(lake, version, bundle)
    return lake, version


# --- load generator ---------------------------------------------------------------------
def make_bodies(n: int, n_users: int, n_items: int, n_clusters: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Mixed traffic: 60% known users (stored history), 15% new users (popularity fallback),
    25% real-time histories of 5-20 items from one cluster (the new-user/session case)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = rng.random()
        if x < 0.60:
            kind, body = "known", {"user_id": f"u{rng.randrange(n_users)}", "k": 10}
        elif x < 0.75:
            kind, body = "new", {"user_id": f"new-{rng.randrange(10**9)}", "k": 10}
        else:
            c = rng.randrange(n_clusters)
            recent = [f"i{c + n_clusters * rng.randrange(n_items // n_clusters)}" for _ in range(rng.randint(5, 20))]
            kind, body = (
                "realtime",
                {"user_id": f"s-{rng.randrange(10**9)}", "recent_items": recent, "k": 10, "device": "mobile"},
            )
        out.append((kind, json.dumps(body).encode()))
    return out


def http_request(port: int, body: bytes) -> bytes:
    return (
        b"POST /recommendations HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (port, len(body))
    ) + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def run_rate(
    port: int, rate: float, seconds: float, max_requests: int, bodies: list[tuple[str, bytes]], connections: int
) -> dict:
    """Open loop: request i is due at t0 + i / rate whatever happened before; latency is
    measured from the due time, so queueing in the client counts (no coordinated omission)."""
    n = min(max_requests, int(rate * seconds))
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    latencies = np.full(n, np.nan)
    server_ms = np.full(n, np.nan)
    statuses: dict[int, int] = {}
    fallbacks: dict[str, int] = {}
    kinds_lat: dict[str, list[float]] = {}
    errors: list[str] = []
    t0 = time.perf_counter() + 0.05

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (i := await queue.get()) is not None:
                kind, body = bodies[i % len(bodies)]
                due = t0 + i / rate
                try:
                    writer.write(http_request(port, body))
                    status, payload = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(repr(exc))
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                lat = time.perf_counter() - due
                latencies[i] = lat
                statuses[status] = statuses.get(status, 0) + 1
                kinds_lat.setdefault(kind, []).append(lat)
                if status == 200:
                    doc = json.loads(payload)
                    server_ms[i] = doc["latency_ms"]
                    reason = (doc.get("fallback") or {}).get("reason", "none")
                    fallbacks[reason] = fallbacks.get(reason, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - t0
    done = latencies[~np.isnan(latencies)] * 1000
    srv = server_ms[~np.isnan(server_ms)]

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 2) if a.size else None

    return {
        "offered_rps": rate,
        "requests": n,
        "completed": int(done.size),
        "achieved_rps": round(done.size / wall, 1),
        "wall_s": round(wall, 2),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": len(errors),
        "latency_ms": {
            "p50": pct(done, 50),
            "p95": pct(done, 95),
            "p99": pct(done, 99),
            "max": pct(done, 100),
            "mean": round(float(done.mean()), 2) if done.size else None,
        },
        "server_handler_ms": {"p50": pct(srv, 50), "p99": pct(srv, 99)},
        "latency_ms_p99_by_kind": {k: pct(np.array(v) * 1000, 99) for k, v in sorted(kinds_lat.items())},
        "fallbacks": dict(sorted(fallbacks.items())),
    }


# --- the server process -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(lake: Lake, port: int, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RECSYS_LAKE_URI": lake.uri,
        "RECSYS_SERVING_CACHE": str(BENCH_DIR / "serving_cache"),
        "RECSYS_POLL_SECONDS": "10",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RECSYS_API_KEY", None)
    log = open(log_path, "wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_dagster.serving.main",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 600) -> float:
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its CPU use, whatever else runs on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_info() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    import onnxruntime

    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "onnxruntime": onnxruntime.__version__,
        "note": "load generator (asyncio, one process) and server (uvicorn, one worker, 1 engine thread) "
        "share these cores; "
        "other processes on the machine also compete (see loadavg_1m per run)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 250, 500])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--max-requests", type=int, default=6000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-ranker", dest="ranker", action="store_false", help="two-tower + index only")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    bundle, build = build_bundle(args.items, args.dim, args.users, args.clusters, args.ranker)
    print(
        f"bundle {bundle} ({'cached' if build['cached'] else f'built in {time.perf_counter() - t:.0f}s'})", flush=True
    )
    bodies = make_bodies(20_000, args.users, args.items, args.clusters)
    stages = stage_costs(bundle, bodies[:600]) if args.ranker else None
    if stages:
        print(
            f"in process, CPU ms/request: with ranker {stages['with_ranker_ms']}, two-tower only "
            f"{stages['two_tower_only_ms']}; ranking stage share {stages['ranker_share']:.0%}",
            flush=True,
        )
    lake, version = promote(bundle)
    port = free_port()
    proc = start_server(lake, port, BENCH_DIR / "server.log")
    try:
        ready_s = wait_ready(port, proc)
        print(f"server ready in {ready_s:.1f}s (pid {proc.pid}, rss {rss_mb(proc.pid)} MB)", flush=True)
        asyncio.run(run_rate(port, 100, 2.0, 200, bodies[::-1], 8))  # warm-up, not reported
        runs = []
        for rate in args.rates:
            load_before = os.getloadavg()[0]
            server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
            res = asyncio.run(run_rate(port, rate, args.seconds, args.max_requests, bodies, args.connections))
            server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu, time.process_time() - client_cpu
            # CPU per request is the contention-proof figure: capacity of one core ~ 1000 / ms.
            res["server_cpu_ms_per_request"] = round(1000 * server_cpu / max(1, res["completed"]), 3)
            res["client_cpu_ms_per_request"] = round(1000 * client_cpu / max(1, res["completed"]), 3)
            # Other work on the machine skews latency: record how busy it was.
            res["loadavg_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
            runs.append(res)
            print(
                f"  {rate:>5.0f} req/s offered: {res['achieved_rps']} achieved, p50 {res['latency_ms']['p50']} ms, "
                f"p99 {res['latency_ms']['p99']} ms, server CPU {res['server_cpu_ms_per_request']} ms/req, "
                f"load {res['loadavg_1m']['after']}",
                flush=True,
            )
        server_rss = rss_mb(proc.pid)
    finally:
        stop_server(proc)

    result = {
        "benchmark": "serving",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "bundle": {**build, "version": version},
        "server": {
            "workers": 1,
            "engine_threads": 1,
            "candidates": 500,
            "ready_s": round(ready_s, 1),
            "rss_mb": server_rss,
            "access_log": "on (JSON lines to a file)",
        },
        "traffic": {
            "mix": "60% known users, 15% new users (popularity fallback), 25% real-time histories of 5-20 items",
            "k": 10,
            "connections": args.connections,
            "open_loop": True,
            "latency_from": "scheduled send time (client queueing included)",
        },
        "stages_in_process": stages,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)

    print(
        f"\n{'offered':>8} {'achieved':>9} {'ok':>6} {'err':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'srv p99':>8} {'cpu/req':>8} {'load':>6}"
    )
    for r in runs:
        ok = r["status_counts"].get("200", 0)
        err = r["requests"] - ok
        lat = r["latency_ms"]
        print(
            f"{r['offered_rps']:>8.0f} {r['achieved_rps']:>9.1f} {ok:>6} {err:>5} {lat['p50']:>8} {lat['p95']:>8} "
            f"{lat['p99']:>8} {lat['max']:>8} {r['server_handler_ms']['p99']:>8} {r['server_cpu_ms_per_request']:>8} "
            f"{r['loadavg_1m']['after']:>6}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
