"""Quality of every system on the demo marketplace, over several generator seeds.

For each seed, runs `recsys demo --seed S` (the daily ingest and the weekly run, as a user
would) in a temporary `RECSYS_HOME` (kept under `--keep DIR` to inspect it), then reads
the last week's offline evaluation (`evaluation/week=W/metrics.json` and
`per_user.parquet`) and the gate's verdict. Prints
one table per seed (every system: the multi-stage candidate, the two-tower stage alone,
the baselines) and the candidate's paired bootstrap 95% interval against the strongest
baseline on Recall@20 and NDCG@10; writes everything as JSON.

    .venv/bin/python bench/quality.py --seeds 7 11 --out bench/results/quality.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_dagster.bundle.gate import GateConfig, paired_bootstrap_ci  # noqa: E402
from recsys_dagster.lake import Lake  # noqa: E402
from recsys_dagster.ml.evaluate import EvaluationRecord  # noqa: E402

METRICS = ("recall@20", "ndcg@10")


def run_seed(seed: int, home: Path, extra: list[str]) -> dict:
    env = {
        **os.environ,
        "RECSYS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "RECSYS_LAKE_URI": f"file://{home / 'lake'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RECSYS_CONFIG": str(home / "recsys.toml"),
    }
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "demo", "--seed", str(seed), *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: recsys demo failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lake = Lake.from_uri(f"file://{home / 'lake'}")
    weeks = sorted(k.split("week=")[1].split("/")[0] for k in lake.list_keys("evaluation/") if "metrics.json" in k)
    week = weeks[-1]
    record = EvaluationRecord.from_dict(lake.read_json(f"evaluation/week={week}/metrics.json"))
    per_user = pq.read_table(io.BytesIO(lake.get_bytes(f"evaluation/week={week}/per_user.parquet")))
    gate = GateConfig()
    versus: dict[str, dict] = {}
    for metric in METRICS:
        names = record.gated_baselines()
        strongest = max(names, key=lambda n: record.systems[n][metric])
        diff = per_user.column(f"candidate.{metric}").to_numpy() - per_user.column(f"{strongest}.{metric}").to_numpy()
        mean, low, high = paired_bootstrap_ci(diff, n_boot=gate.n_boot, seed=gate.seed)
        base = record.systems[strongest][metric]
        versus[metric] = {
            "strongest_baseline": strongest,
            "baseline": base,
            "candidate": record.systems["candidate"][metric],
            "lift": record.systems["candidate"][metric] / base - 1 if base > 0 else None,
            "diff": mean,
            "ci95": [low, high],
        }
    decisions = [json.loads(line) for line in lake.get_bytes("promoted/history.jsonl").decode().splitlines()]
    verdict = [d for d in decisions if d.get("week") == week and d["action"] in ("decision", "refuse")][-1]
    return {
        "seed": seed,
        "week": week,
        "seconds": round(seconds, 1),
        "test_users": record.n_users,
        "systems": {name: {m: record.systems[name][m] for m in (*METRICS, "recall@50")} for name in record.systems},
        "versus_strongest": versus,
        "promoted": verdict["action"] == "decision",
        "gate_reasons": verdict.get("reasons", []),
    }


def table(result: dict) -> str:
    lines = [
        f"seed {result['seed']}, week {result['week']}, {result['test_users']} test users, "
        f"{'promoted' if result['promoted'] else 'refused'}",
        "",
        "| system | recall@20 | ndcg@10 | recall@50 |",
        "|---|---|---|---|",
    ]
    for name, m in sorted(result["systems"].items(), key=lambda kv: -kv[1]["recall@20"]):
        lines.append(f"| {name} | {m['recall@20']:.4f} | {m['ndcg@10']:.4f} | {m['recall@50']:.4f} |")
    for metric, v in result["versus_strongest"].items():
        lines.append(
            f"\ncandidate vs {v['strongest_baseline']} on {metric}: {v['candidate']:.4f} vs {v['baseline']:.4f} "
            f"({v['lift']:+.1%}), paired difference {v['diff']:+.4f}, 95% CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each seed's RECSYS_HOME under KEEP/seed-S (lake, MLflow, Dagster)"
    )
    parser.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[], help="passed to `recsys demo`")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        if args.keep is not None:
            home = args.keep / f"seed-{seed}"
            shutil.rmtree(home, ignore_errors=True)
            result = run_seed(seed, home, args.demo_args)
        else:
            with tempfile.TemporaryDirectory(prefix=f"recsys-quality-{seed}-") as tmp:
                result = run_seed(seed, Path(tmp), args.demo_args)
        print(table(result), flush=True)
        print(flush=True)
        results.append(result)
    out = {
        "benchmark": "quality",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
