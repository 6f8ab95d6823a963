"""The command-line flags of `recsys import` and their mapping keys (cli.py registers them).

Light on purpose (no pyarrow): every `recsys` command builds the parser, `recsys serve` too.

Each flag stands for one key of the mapping file: `--KEY` for `[events]` and
`--items-KEY` for `[items]` (dashes for underscores). Flags default to None, "not given",
so the mapping file's value or the dataclass default applies (`mapping.build_mapping`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recsys_dagster.ingest.mapping import (
    FORMATS,
    MISSING_ITEMS,
    TIMESTAMP_UNITS,
    ImportMapping,
    build_mapping,
    read_mapping_file,
)

DEFAULT_REJECTS = "recsys-import-rejects.jsonl"  # in the working directory

# (mapping key, metavar, help)
EVENT_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("user", "COL", "user id column"),
    ("item", "COL", "item id column"),
    ("timestamp", "COL", "time column: epoch seconds, epoch milliseconds or ISO-8601"),
    ("session", "COL", "session id column (none: session_id null)"),
    ("device", "COL", "device column, values mobile/desktop/tablet (none or other values: 'unknown')"),
    ("event", "COL", "event type column ..."),
    ("event_map", "SRC=TYPE,...", "... and its value map SRC=TYPE,..., e.g. view=view,addtocart=add_to_favorites"),
    ("rating", "COL", "or a numeric column (e.g. a rating) ..."),
    (
        "rating_thresholds",
        "TYPE=MIN,...",
        "... and thresholds TYPE=MIN,..., e.g. purchase=5,add_to_favorites=4,click=3",
    ),
    ("rating_below", "TYPE", "event type below the lowest threshold (unset: those rows are rejected)"),
    ("event_type", "TYPE", "or one event type for every row"),
    ("delimiter", "SEP", "csv/tsv field delimiter (default , or tab)"),
)
ITEM_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("id", "COL", "item id column (default: the --item column name)"),
    ("title", "COL", "title column (none: the item id, and the report says so)"),
    ("description", "COL", "description column (none: null)"),
    ("category", "COL", "category path column: a string or a list (none: 'unknown')"),
    ("category_separator", "SEP", "separator of its levels, e.g. '|' for MovieLens genres (default ' > ')"),
    ("brand", "COL", "brand column (none: null)"),
    ("price", "COL", "price column (none: null, i.e. unknown, never 0)"),
    ("currency", "COL", "currency column ..."),
    ("currency_code", "CODE", "... or one currency code for every item (none: 'unknown')"),
    ("location", "COL", "location column (none: 'unknown')"),
    ("condition", "COL", "condition column, new/like_new/used/for_parts (none or other values: 'unknown')"),
    ("created_at", "COL", "listing time column (none: the item's first interaction)"),
    ("image_url", "COL", "image URL column (none: null)"),
    ("delimiter", "SEP", "csv/tsv field delimiter"),
)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("events", nargs="+", metavar="EVENTS", help="interaction file(s): a path or s3://bucket/key")
    p.add_argument("--items", default=None, metavar="FILE", help="items file (a path or s3://bucket/key)")
    p.add_argument("--mapping", default=None, metavar="TOML", help="mapping file ([events], [items], missing_items)")
    ev = p.add_argument_group("interaction columns, [events] in the mapping file")
    for key, metavar, text in EVENT_FLAGS:
        ev.add_argument(_flag(key), dest=key, metavar=metavar, help=text)
    ev.add_argument(
        "--timestamp-unit", choices=TIMESTAMP_UNITS, help="auto (default): from the values; naive ISO times are UTC"
    )
    ev.add_argument("--format", choices=FORMATS, help="default: from the file name (.csv, .tsv, .parquet, .jsonl[.gz])")
    ev.add_argument("--no-header", dest="header", action="store_const", const=False, help="csv/tsv without a header")
    it = p.add_argument_group("item columns, [items] in the mapping file")
    for key, metavar, text in ITEM_FLAGS:
        it.add_argument(_flag(f"items_{key}"), dest=f"items_{key}", metavar=metavar, help=text)
    it.add_argument("--items-created-at-unit", dest="items_created_at_unit", choices=TIMESTAMP_UNITS)
    it.add_argument("--items-format", dest="items_format", choices=FORMATS)
    it.add_argument("--items-no-header", dest="items_header", action="store_const", const=False)
    p.add_argument(
        "--missing-items",
        choices=MISSING_ITEMS,
        help="items the interactions name but the items file lacks: add them with unknown fields (default), "
        "or reject those interactions (reason unknown_item)",
    )
    p.add_argument(
        "--rejects", default=DEFAULT_REJECTS, metavar="PATH", help="rejected rows, JSON lines (default: %(default)s)"
    )
    p.add_argument("--lake", default=None, help="lake URI (default: the configured lake)")
    p.add_argument(
        "--no-set-start-date",
        action="store_true",
        help="leave start_date alone (default: set it to the first imported day in the project file)",
    )


def mapping_from_args(args: argparse.Namespace) -> ImportMapping:
    flags: dict[str, Any] = vars(args)
    event_keys = [k for k, _, _ in EVENT_FLAGS] + ["timestamp_unit", "format", "header"]
    item_keys = [k for k, _, _ in ITEM_FLAGS] + ["created_at_unit", "format", "header"]
    return build_mapping(
        read_mapping_file(Path(args.mapping)) if args.mapping else None,
        {k: flags[k] for k in event_keys},
        {k: flags[f"items_{k}"] for k in item_keys},
        args.missing_items,
        has_items_file=args.items is not None,
    )
