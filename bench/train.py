"""Training throughput of the default two-tower model: examples/second on this machine's
CPU (and CUDA when present), with time split between data loading and compute.

    .venv/bin/python bench/train.py [--examples 200000] [--items 20000] [--epochs 1]

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

from recsys_dagster.ml.data import synthetic_tables  # noqa: E402
from recsys_dagster.ml.train import TrainConfig, train_two_tower  # noqa: E402


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
        n_users=n_users, n_items=args.items, n_categories=50, per_user=per_user, val_per_user=1,
        cold_items=args.items // 20, seed=0,
    )
    gen_s = time.perf_counter() - t0
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for dev in devices:
        cfg = TrainConfig(epochs=args.epochs, device=dev, patience=args.epochs + 1, max_eval_users=2000)
        with tempfile.TemporaryDirectory() as ck:
            res = train_two_tower(train, val, items, cfg, Path(ck), resume=False)
        rows.append(
            {
                "device": res.device,
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
        "config": asdict(TrainConfig()),
        "items": args.items,
        "synthetic_generation_seconds": round(gen_s, 2),
        "machine": machine_info(),
        "results": rows,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    cols = ["device", "examples", "epochs", "examples_per_s", "load_seconds", "compute_seconds", "val_recall@20", "val_recall@20_popularity"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{str(r[c]):>14}" for c in cols))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
