"""The `recsys` command: generate data, run the demo, import logs, inspect and roll back promotions, serve.

Heavy imports stay inside each command: `recsys serve` must start in the slim serving
image, which has neither dagster nor torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta


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


def cmd_train(args: argparse.Namespace) -> int:
    """The weekly training for the last week that ends on or before --until (or every such
    week from --from), without computing partition keys by hand."""
    from recsys_dagster import settings
    from recsys_dagster.demo import run_partitions, weeks_until

    settings.apply_quiet_defaults()
    from recsys_dagster.definitions import defs

    keys = defs.resolve_job_def("weekly_training").partitions_def.get_partition_keys()
    until = date.fromisoformat(args.until)
    weeks = weeks_until(until, keys)
    if args.start:
        weeks = [w for w in weeks if date.fromisoformat(w) + timedelta(days=6) >= date.fromisoformat(args.start)]
    elif weeks:
        weeks = weeks[-1:]
    if not weeks:
        first = keys[0] if keys else "none"
        print(
            f"no complete training week ends on or before {until} (weeks run Monday..Sunday; the first is {first}, "
            f"set by start_date {settings.current().start_date} in {settings.project_file()})",
            file=sys.stderr,
        )
        return 2
    print(
        f"training week(s) {', '.join(weeks)} "
        f"(each on the {settings.current().training_window_days} days ending that Sunday)"
    )
    run_config = json.loads(args.config_json) if args.config_json else None
    run_partitions("weekly_training", weeks, run_config)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The settings every command uses, and where each came from."""
    import os

    from recsys_dagster import settings

    path = settings.project_file()
    from_file = settings.read_project_file(path)
    current = settings.current()
    print(f"project file: {path} ({'found' if path.is_file() else 'absent'})")
    for key, var in settings.PROJECT_KEYS.items():
        source = f"${var}" if os.environ.get(var) else ("file" if key in from_file else "default")
        print(f"  {key:<22} {getattr(current, key)!s:<40} ({source})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from recsys_dagster.bundle.promote import format_status, status

    st = status(_lake(args.lake), last=args.last)
    print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys_dagster.bundle.format import BundleError
    from recsys_dagster.bundle.promote import PromotionError, rollback
    from recsys_dagster.lake import LakeError

    lake = _lake(args.lake)
    try:
        pointer = rollback(lake, args.to, reason=args.reason, actor="cli")
    except (BundleError, LakeError, PromotionError, ValueError) as exc:
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


def cmd_import(args: argparse.Namespace) -> int:
    """Bring your own logs into the landing zone; then set the project's start date."""
    from recsys_dagster import settings
    from recsys_dagster.ingest.columns import ColumnError
    from recsys_dagster.ingest.import_args import mapping_from_args
    from recsys_dagster.ingest.importer import ImportDataError, format_report, import_logs
    from recsys_dagster.ingest.mapping import MappingError
    from recsys_dagster.ingest.sources import S3Options, SourceError
    from recsys_dagster.lake import LakeError

    try:
        mapping = mapping_from_args(args)
        s = settings.current()
        report = import_logs(
            _lake(args.lake),
            args.events,
            mapping,
            items=args.items,
            rejects_path=args.rejects,
            s3=S3Options(endpoint_url=s.s3_endpoint_url, region=s.s3_region),
        )
    except (ColumnError, ImportDataError, MappingError, SourceError, LakeError) as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    first, last = report.first_day, report.last_day
    if args.no_set_start_date:
        print(f"start_date left as it is (--no-set-start-date); the imported days begin on {first}")
    else:
        path = settings.project_file()
        settings.write_project_file(path, {"start_date": first})
        print(f"set start_date = {first} in {path}")
        effective = settings.Settings.from_env().start_date.isoformat()
        if effective != first:
            print(f"note: RECSYS_START_DATE={effective} in the environment overrides the project file")
    print("next:")
    print(
        "  dagster asset materialize -m recsys_dagster.definitions --select catalog,events,sessions "
        f"--partition-range {first}...{last}"
    )
    print(f"  recsys train --until {last}")
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

    t = sub.add_parser("train", help="run the weekly training up to a date (no partition keys needed)")
    t.add_argument(
        "--until", required=True, help="train on everything up to this day: the last week ending on or before it"
    )
    t.add_argument("--from", dest="start", default=None, help="also every earlier week ending on or after this day")
    t.add_argument("--config-json", default=None, help="run config, as for `dagster asset materialize`")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("config", help="show the project settings and where each came from")
    c.set_defaults(fn=cmd_config)

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

    from recsys_dagster.ingest.import_args import add_import_arguments

    i = sub.add_parser(
        "import",
        help="bring your own logs: interactions (+ items) from CSV/TSV/Parquet/JSONL into the landing zone",
        description="Import interaction logs (CSV, TSV, Parquet, JSONL; optionally .gz; local or s3://) and an "
        "optional items file into the landing zone: one events file per day from the first to the last event "
        "day, the catalog once on the first day. Columns come from a TOML mapping file (--mapping) and/or the "
        "flags below; a flag overrides the file. Rejected rows go to --rejects with their reason.",
    )
    add_import_arguments(i)
    i.set_defaults(fn=cmd_import)

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
