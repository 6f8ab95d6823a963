"""The `recsys` command: generate data, run the demo, inspect and roll back promotions, serve.

Heavy imports stay inside each command: `recsys serve` must start in the slim serving
image, which has neither dagster nor torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date


def _lake(uri: str | None):
    from recsys_dagster.lake import Lake
    from recsys_dagster.settings import current

    s = current()
    return Lake.from_uri(uri or s.lake_uri, endpoint_url=s.s3_endpoint_url, region_name=s.s3_region)


def cmd_generate(args: argparse.Namespace) -> int:
    from recsys_dagster.datagen import GeneratorConfig, generate

    cfg = GeneratorConfig(
        start_date=date.fromisoformat(args.start_date),
        days=args.days,
        users=args.users,
        items=args.items,
        seed=args.seed,
        fault_rate=args.fault_rate,
    )
    lake = _lake(args.lake)
    summary = generate(lake, cfg).to_dict()
    totals = summary.get("totals", summary)
    print(f"wrote {args.days} day(s) of landing data to {lake.uri}: {json.dumps(totals, sort_keys=True)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recsys_dagster import settings
    from recsys_dagster.demo import run_demo

    settings.apply_quiet_defaults()
    t0 = time.time()
    run_demo(
        start_date=date.fromisoformat(args.start_date),
        days=args.days,
        users=args.users,
        items=args.items,
        seed=args.seed,
        fault_rate=args.fault_rate,
        train_weeks=args.train_weeks,
        epochs=args.epochs,
        skip_generate=args.skip_generate,
    )
    print(f"demo finished in {time.time() - t0:.0f} s")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from recsys_dagster import settings
    from recsys_dagster.demo import run_partitions

    settings.apply_quiet_defaults()
    from recsys_dagster.definitions import defs

    keys = defs.resolve_job_def(args.job).partitions_def.get_partition_keys()
    selected = [k for k in keys if args.start <= k <= args.end]
    if not selected:
        print(
            f"no {args.job} partitions between {args.start} and {args.end} (first {keys[0]}, last {keys[-1]})",
            file=sys.stderr,
        )
        return 2
    run_config = json.loads(args.config_json) if args.config_json else None
    t0 = time.time()
    run_partitions(args.job, selected, run_config)
    print(f"backfilled {len(selected)} partition(s) of {args.job} in {time.time() - t0:.0f} s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from recsys_dagster.bundle.promote import format_status, status

    st = status(_lake(args.lake), last=args.last)
    print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys_dagster.bundle.format import BundleError
    from recsys_dagster.bundle.promote import rollback
    from recsys_dagster.lake import LakeError

    lake = _lake(args.lake)
    try:
        pointer = rollback(lake, args.to, reason=args.reason, actor="cli")
    except (BundleError, LakeError, ValueError) as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 2
    if not args.no_mlflow:
        from recsys_dagster.ml.tracking import TrackingStore, move_champion_alias
        from recsys_dagster.settings import current

        moved = move_champion_alias(TrackingStore.from_settings(current()), pointer.get("mlflow_model_version"))
        if moved:
            print(f"MLflow alias 'champion' -> {moved}")
    print(f"promoted version is now {pointer['version']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys_dagster.serving.main import run

    run(host=args.host, port=args.port)
    return 0


def _data_args(p: argparse.ArgumentParser, fault_rate: float) -> None:
    """The synthetic data set's shape, shared by `generate` and `demo`."""
    p.add_argument("--days", type=int, default=21)
    p.add_argument("--start-date", default="2026-10-05")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--fault-rate", type=float, default=fault_rate, help="share of corrupted event lines (quarantine path)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write synthetic marketplace landing data into the lake")
    _data_args(g, fault_rate=0.0)
    g.add_argument("--lake", default=None, help="lake URI (default $RECSYS_LAKE_URI)")
    g.set_defaults(fn=cmd_generate)

    d = sub.add_parser("demo", help="generate data and run the whole pipeline on the local instance")
    _data_args(d, fault_rate=0.01)
    d.add_argument("--train-weeks", type=int, default=None, help="train only the last N weeks (default: all)")
    d.add_argument("--epochs", type=int, default=None, help="override training epochs")
    d.add_argument("--skip-generate", action="store_true")
    d.set_defaults(fn=cmd_demo)

    b = sub.add_parser("backfill", help="run a partitioned job for a range of partitions, in this process")
    b.add_argument("--job", choices=["daily_ingest", "weekly_training"], default="daily_ingest")
    b.add_argument("--from", dest="start", required=True, help="first partition key (YYYY-MM-DD)")
    b.add_argument("--to", dest="end", required=True, help="last partition key, inclusive")
    b.add_argument("--config-json", default=None, help="run config, as for `dagster asset materialize`")
    b.set_defaults(fn=cmd_backfill)

    s = sub.add_parser("status", help="what is promoted, when, its metrics, and the last decisions")
    s.add_argument("--lake", default=None)
    s.add_argument("--last", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    r = sub.add_parser("rollback", help="flip the promoted pointer back to an earlier verified bundle")
    r.add_argument("--to", default=None, help="version (default: the one promoted before the current)")
    r.add_argument("--reason", default="manual rollback")
    r.add_argument("--lake", default=None)
    r.add_argument("--no-mlflow", action="store_true", help="do not move the MLflow champion alias")
    r.set_defaults(fn=cmd_rollback)

    v = sub.add_parser("serve", help="start the recommendation API (uvicorn)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
