"""Training throughput of the default two-tower model: examples/second on this machine's
CPU (and CUDA when present), with time split between data loading and compute.

    .venv/bin/python bench/train.py [--examples 200000] [--items 20000] [--epochs 1]

It also times user-tower inference in torch against the exported ONNX graph in
onnxruntime (what serving runs), on the same trained model in the same run.

Data is synthetic (numpy) with the contract's shape: history of 20, 5 negatives per row.
Writes bench/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_dagster.ml.train import TrainConfig, train_two_tower  # noqa: E402
from tests.synthetic import synthetic_tables  # noqa: E402


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def inference_comparison(model, repeats: int = 300) -> list[dict]:
    """User tower: torch (eval, no_grad, fp32) vs onnxruntime (1 thread, as in serving)."""
    import numpy as np
    import onnxruntime as ort

    from recsys_dagster.ml.export import export_user_tower

    model = model.cpu().eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_user_tower(model, Path(tmp) / "user_tower.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        for batch in (1, 256):
            emb = rng.standard_normal((batch, 20, model.dim)).astype(np.float32)
            mask = np.ones((batch, 20), np.float32)
            dev = np.zeros(batch, np.int64)
            hour = np.full(batch, 12, np.int64)
            feeds = {"history_emb": emb, "history_mask": mask, "device": dev, "hour": hour}
            tt = [torch.from_numpy(x) for x in (emb, mask, dev, hour)]
            with torch.no_grad():
                torch_fn = lambda: model.user_tower(*tt)  # noqa: E731
                _timed(torch_fn, 20)
                t_ms = _timed(torch_fn, repeats)
            _timed(lambda: sess.run(None, feeds), 20)
            o_ms = _timed(lambda: sess.run(None, feeds), repeats)
            for engine, ms in (("torch", t_ms), ("onnxruntime", o_ms)):
                rows.append(
                    {
                        "engine": engine,
                        "batch": batch,
                        "history_len": 20,
                        "threads": 1,
                        "p50_ms": round(float(np.percentile(ms, 50)), 4),
                        "p99_ms": round(float(np.percentile(ms, 99)), 4),
                        "users_per_s": round(batch / (float(np.median(ms)) / 1000), 1),
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = ap.parse_args()

    per_user = 20
    n_users = max(1, args.examples // per_user)
    t0 = time.perf_counter()
    train, val, items = synthetic_tables(
        n_users=n_users,
        n_items=args.items,
        n_categories=50,
        per_user=per_user,
        val_per_user=1,
        cold_items=args.items // 20,
        seed=0,
    )
    gen_s = time.perf_counter() - t0
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    trained = None
    # The time-aware item tower against the content-only one, same data, same run.
    for dev, time_features in [(d, t) for d in devices for t in (True, False)]:
        cfg = TrainConfig(
            epochs=args.epochs,
            device=dev,
            patience=args.epochs + 1,
            max_eval_users=2000,
            history_len=20,  # the synthetic histories hold at most 20 items
            time_features=time_features,
            resume=False,
            refit=False,
        )
        with tempfile.TemporaryDirectory() as ck:
            res = train_two_tower(train, val, items, cfg, Path(ck))
        trained = trained or res.model
        rows.append(
            {
                "device": res.device,
                "time_features": time_features,
                "amp_bf16": dev == "cuda" and cfg.amp,
                "examples": train.num_rows,
                "epochs": res.epochs_run,
                "examples_per_s": round(res.examples_per_s, 1),
                "load_seconds": round(res.load_seconds, 2),
                "compute_seconds": round(res.compute_seconds, 2),
                "val_recall@20": round(res.final_metrics["val_recall@20"], 4),
                "val_recall@20_popularity": round(res.final_metrics["val_recall@20_popularity"], 4),
            }
        )
    result = {
        "benchmark": "two-tower training throughput",
        "config": {**asdict(cfg), "time_features": "per row"},  # what the rows ran
        "items": args.items,
        "synthetic_generation_seconds": round(gen_s, 2),
        "machine": machine_info(),
        "results": rows,
        "inference": inference_comparison(trained),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    cols = [
        "device",
        "time_features",
        "examples",
        "epochs",
        "examples_per_s",
        "load_seconds",
        "compute_seconds",
        "val_recall@20",
        "val_recall@20_popularity",
    ]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{str(r[c]):>14}" for c in cols))
    print()
    print(f"{'engine':>12} {'batch':>6} {'p50 ms':>8} {'p99 ms':>8} {'users/s':>10}")
    for r in result["inference"]:
        print(f"{r['engine']:>12} {r['batch']:>6} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['users_per_s']:>10}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
