"""`recsys import`: user logs shaped like the common public data sets -> the landing zone.

Fixtures under tests/data/: a MovieLens-like `ratings.csv` (epoch seconds, a two-day gap,
three bad rows) with `movies.csv` ("|" genres, a duplicate and an id-less row) and its
mapping file; a RetailRocket-like `events.csv` (epoch milliseconds, view/addtocart/
transaction, three bad rows) without an items file.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_dagster import cli
from recsys_dagster.contract import EVENT_FIELDS, LANDING_CATALOG, LANDING_EVENTS, UNKNOWN
from recsys_dagster.ingest import columns as C
from recsys_dagster.ingest.importer import IMPORT_MANIFEST, ImportDataError, import_logs, source_token
from recsys_dagster.ingest.mapping import MappingError, build_mapping, read_mapping_file
from recsys_dagster.ingest.sources import S3Options
from recsys_dagster.ingest.validate import validate_catalog, validate_events
from recsys_dagster.lake import Lake

DATA = Path(__file__).parent / "data"
ML = DATA / "movielens"
RR = DATA / "retailrocket"
ML_DAYS = ["2015-03-02", "2015-03-03", "2015-03-04", "2015-03-05", "2015-03-06"]
ML_EVENTS_PER_DAY = {"2015-03-02": 6, "2015-03-03": 6, "2015-03-04": 0, "2015-03-05": 0, "2015-03-06": 5}
RR_FLAGS = {
    "user": "visitorid",
    "item": "itemid",
    "timestamp": "timestamp",
    "event": "event",
    "event_map": "view=view,addtocart=add_to_favorites,transaction=purchase",
}


def ml_mapping(missing_items: str | None = None, **events):
    return build_mapping(read_mapping_file(ML / "mapping.toml"), events, {}, missing_items, has_items_file=True)


def rr_mapping(**over):
    return build_mapping(None, {**RR_FLAGS, **over}, {}, None, has_items_file=False)


def landed(lake: Lake, prefix: str) -> dict[str, bytes]:
    return {k: lake.get_bytes(k) for k in lake.list_keys(prefix)}


def lines(data: bytes) -> list[dict]:
    return [json.loads(x) for x in gzip.decompress(data).decode().splitlines()]


def events_by_day(lake: Lake) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, data in landed(lake, LANDING_EVENTS).items():
        out.setdefault(key.split("/")[2][len("dt=") :], []).extend(lines(data))
    return out


def rejects_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def import_ml(lake: Lake, tmp_path: Path, ratings: Path | str = ML / "ratings.csv", **kw):
    kw.setdefault("mapping", ml_mapping())
    return import_logs(
        lake, [str(ratings)], items=str(ML / "movies.csv"), rejects_path=tmp_path / "rejects.jsonl", **kw
    )


# --- MovieLens: ratings + movies ---------------------------------------------------------------


def test_movielens_lands_every_day_and_the_catalog_once(local_lake: Lake, tmp_path: Path):
    report = import_ml(local_lake, tmp_path)

    assert (report.rows_read, report.events_written, report.item_rows_read) == (20, 17, 9)
    # >= 5 purchase, >= 4 add_to_favorites, >= 3 click, below: view (2.0, 1.0 and 0.5)
    assert report.events_by_type == {"view": 3, "click": 4, "add_to_favorites": 6, "purchase": 4}
    assert report.event_rejects == {"invalid_timestamp": 1, "missing_user": 1, "rating_not_numeric": 1}
    assert report.item_rejects == {"duplicate_item_id": 1, "missing_item_id": 1}
    assert (report.first_day, report.last_day, report.days, report.empty_days) == ("2015-03-02", "2015-03-06", 5, 2)
    assert report.empty_day_sample == ["2015-03-04", "2015-03-05"]
    assert (report.users, report.items_with_events, report.items_from_file, report.items_added) == (5, 7, 7, 1)

    files = landed(local_lake, LANDING_EVENTS)
    assert sorted(files) == [f"{LANDING_EVENTS}/dt={d}/part-import-00000.jsonl.gz" for d in ML_DAYS]
    by_day = events_by_day(local_lake)
    assert {d: len(v) for d, v in by_day.items()} == ML_EVENTS_PER_DAY
    # An empty day is a valid gzip file with zero lines.
    assert gzip.decompress(files[f"{LANDING_EVENTS}/dt=2015-03-04/part-import-00000.jsonl.gz"]) == b""

    first = by_day["2015-03-02"][0]
    token = source_token(str((ML / "ratings.csv").resolve()))
    assert first == {
        "event_id": f"{token}-1",
        "user_id": "1",
        "session_id": None,
        "item_id": "1",
        "event_type": "add_to_favorites",
        "timestamp": "2015-03-02T09:00:00Z",
        "device_type": UNKNOWN,
    }
    assert all(list(e) == list(EVENT_FIELDS) for day in by_day.values() for e in day)
    # The event at 23:59:59 stays on its day, the one at 00:00:00 starts the next.
    assert by_day["2015-03-02"][-1]["timestamp"] == "2015-03-02T23:59:59Z"
    assert by_day["2015-03-03"][0]["timestamp"] == "2015-03-03T00:00:00Z"

    catalog_files = landed(local_lake, LANDING_CATALOG)
    assert list(catalog_files) == [f"{LANDING_CATALOG}/dt=2015-03-02/catalog.jsonl.gz"]
    catalog = {r["item_id"]: r for r in lines(catalog_files[f"{LANDING_CATALOG}/dt=2015-03-02/catalog.jsonl.gz"])}
    assert sorted(catalog, key=int) == ["1", "2", "3", "5", "8", "13", "21", "999"]
    toy = catalog["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["category_path"] == "Adventure > Animation > Children"  # 5 genres, 3 levels kept
    assert toy["price"] is None and toy["brand"] is None and toy["description"] is None
    assert (toy["condition"], toy["location"], toy["currency"]) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert toy["created_at"] == "2015-03-02T09:00:00Z"  # its first interaction
    assert catalog["3"]["title"] == "Grumpier Old Men, The (1995)"  # the first copy, quoted comma kept
    assert catalog["21"]["created_at"] == "2015-03-02T09:00:00Z"  # no interactions: the import's first event
    # Referenced by a rating, absent from movies.csv: explicit unknowns, title = id.
    assert catalog["999"] == {
        "item_id": "999",
        "title": "999",
        "description": None,
        "category_path": UNKNOWN,
        "price": None,
        "currency": UNKNOWN,
        "brand": None,
        "location": UNKNOWN,
        "condition": UNKNOWN,
        "image_url": None,
        "created_at": "2015-03-02T23:59:59Z",
    }
    notes = "\n".join(report.notes)
    assert "epoch seconds (detected" in notes and "no device column" in notes and "price is null" in notes
    assert "1 item(s) referenced by interactions are not in the items file" in notes


def test_rejects_file_names_source_row_reason_and_raw_row(local_lake: Lake, tmp_path: Path):
    import_ml(local_lake, tmp_path)
    rejects = rejects_of(tmp_path / "rejects.jsonl")
    ratings, movies = str((ML / "ratings.csv").resolve()), str((ML / "movies.csv").resolve())
    assert [(r["kind"], r["source"], r["row"], r["reason"]) for r in rejects] == [
        ("items", movies, 8, "duplicate_item_id"),
        ("items", movies, 9, "missing_item_id"),
        ("events", ratings, 5, "rating_not_numeric"),
        ("events", ratings, 9, "missing_user"),
        ("events", ratings, 14, "invalid_timestamp"),
    ]
    assert rejects[2]["raw"] == {"userId": "3", "movieId": "2", "rating": "abc", "timestamp": "1425301200"}
    assert rejects[2]["detail"] == "rating 'abc' is not a number"
    assert rejects[4]["detail"] == "timestamp 'yesterday' is not epoch seconds between 1970 and 2099"
    assert rejects[0]["detail"] == "item '3' already given on row 3"
    # Row numbers are data records: row 5 is the sixth line of the file.
    assert (ML / "ratings.csv").read_text().splitlines()[5] == "3,2,abc,1425301200"


def test_reimport_gives_the_same_files_and_replaces_the_previous_import(local_lake: Lake, tmp_path: Path):
    import_ml(local_lake, tmp_path)
    before = landed(local_lake, "landing")
    import_ml(local_lake, tmp_path)
    assert landed(local_lake, "landing") == before  # same ids, same bytes, nothing added

    # Another producer's file in an imported day is kept by every later import.
    foreign = f"{LANDING_EVENTS}/dt=2015-03-03/part-00000.jsonl.gz"
    local_lake.put_bytes(foreign, gzip.compress(b""))
    # A shorter log starting a day later: its catalog lands on its own first day, and what
    # the previous import wrote outside the new range is removed.
    shorter = tmp_path / "ratings.csv"
    header, *rows = (ML / "ratings.csv").read_text().splitlines()
    kept = [r for r in rows if not r.split(",")[3].isdigit() or int(r.split(",")[3]) >= 1425340800]  # from 03-03
    shorter.write_text("\n".join([header, *kept]) + "\n")
    report = import_ml(local_lake, tmp_path, ratings=shorter)
    assert (report.first_day, report.last_day) == ("2015-03-03", "2015-03-06")
    assert sorted(landed(local_lake, LANDING_CATALOG)) == [f"{LANDING_CATALOG}/dt=2015-03-03/catalog.jsonl.gz"]
    assert sorted(landed(local_lake, LANDING_EVENTS)) == sorted(
        [f"{LANDING_EVENTS}/dt={d}/part-import-00000.jsonl.gz" for d in ML_DAYS[1:]] + [foreign]
    )
    assert report.removed_files == [
        f"{LANDING_CATALOG}/dt=2015-03-02/catalog.jsonl.gz",
        f"{LANDING_EVENTS}/dt=2015-03-02/part-import-00000.jsonl.gz",
    ]
    assert any("1 landing file(s) of other producers" in n for n in report.notes)
    assert local_lake.read_json(IMPORT_MANIFEST)["catalog_keys"] == [report.catalog_key]


def test_another_producers_catalog_is_never_overwritten(local_lake: Lake, tmp_path: Path):
    key = f"{LANDING_CATALOG}/dt=2015-03-02/catalog.jsonl.gz"
    local_lake.put_bytes(key, gzip.compress(b'{"item_id": "theirs"}\n'))
    with pytest.raises(ImportDataError, match="was not written by `recsys import`"):
        import_ml(local_lake, tmp_path)
    assert local_lake.list_keys("landing") == [key]  # nothing written


def test_missing_items_reject_instead_of_add(local_lake: Lake, tmp_path: Path):
    report = import_ml(local_lake, tmp_path, mapping=ml_mapping(missing_items="reject"))
    assert report.items_added == 0 and report.catalog_items == 7
    assert report.event_rejects["unknown_item"] == 1 and report.events_written == 16
    (rej,) = [r for r in rejects_of(tmp_path / "rejects.jsonl") if r["reason"] == "unknown_item"]
    assert rej["raw"]["movieId"] == "999" and rej["detail"] == "movieId '999' is not in the items file"


def test_nothing_valid_is_an_error_and_the_lake_is_untouched(local_lake: Lake, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating,timestamp\n,1,4,1425286800\n1,2,x,1425286800\n")
    with pytest.raises(ImportDataError, match="no valid interaction"):
        import_ml(local_lake, tmp_path, ratings=bad)
    assert local_lake.list_keys("landing") == []
    assert [r["reason"] for r in rejects_of(tmp_path / "rejects.jsonl") if r["kind"] == "events"] == [
        "missing_user",
        "rating_not_numeric",
    ]


def test_a_column_that_is_not_there_is_a_clear_error(local_lake: Lake, tmp_path: Path):
    with pytest.raises(ImportDataError, match=r"no column 'user_id' \(columns: userId, movieId, rating, timestamp\)"):
        import_ml(local_lake, tmp_path, mapping=ml_mapping(user="user_id"))


def test_every_reject_reason_with_its_detail(tmp_path: Path):
    from recsys_dagster.ingest.importer import EVENT_REJECT_REASONS, ITEM_REJECT_REASONS

    ratings = tmp_path / "ratings.csv"
    ratings.write_text(
        "u,i,t,r\n1,a,1425286800,4\n,a,1425286800,4\n1,,1425286800,4\n1,a,,4\n1,a,soon,4\n1,a,1425286800,\n"
        "1,a,1425286800,four\n1,a,1425286800,1\n1,a,1425286800,4,x\n1,zzz,1425286800,4\n"
    )
    items = tmp_path / "items.csv"
    items.write_text(
        "id,price,created\na,10,2015-01-01T00:00:00Z\n,1,2015-01-01\nb,-3,2015-01-01\nc,cheap,2015-01-01\n"
        "d,5,someday\na,7,2015-01-01\ne,1,2015-01-01,extra\n"
    )
    events = {"user": "u", "item": "i", "timestamp": "t", "rating": "r", "rating_thresholds": "click=3"}
    mapping = build_mapping(None, events, {"id": "id", "price": "price", "created_at": "created"}, "reject", True)
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    import_logs(lake, [str(ratings)], mapping, items=str(items), rejects_path=tmp_path / "a.jsonl")
    typed = tmp_path / "typed.csv"
    typed.write_text("u,i,t,e\n1,a,1425286800,view\n1,a,1425286800,\n1,a,1425286800,like\n")
    mapping = build_mapping(None, {"user": "u", "item": "i", "timestamp": "t", "event": "e"}, {}, None, False)
    import_logs(lake, [str(typed)], mapping, rejects_path=tmp_path / "b.jsonl")

    rejects = rejects_of(tmp_path / "a.jsonl") + rejects_of(tmp_path / "b.jsonl")
    details = {(r["kind"], r["reason"], r["row"]): r["detail"] for r in rejects}
    assert {r for k, r, _ in details if k == "events"} == set(EVENT_REJECT_REASONS)
    assert {r for k, r, _ in details if k == "items"} == set(ITEM_REJECT_REASONS)
    assert details == {
        ("items", "missing_item_id", 2): "'id' is empty",
        ("items", "invalid_price", 3): "price '-3' is not a number >= 0",
        ("items", "invalid_price", 4): "price 'cheap' is not a number >= 0",
        ("items", "invalid_created_at", 5): "created 'someday' is not ISO-8601 between 1970 and 2099",
        ("items", "duplicate_item_id", 6): "item 'a' already given on row 1",
        ("items", "malformed_row", 7): "4 fields where the header has 3",
        ("events", "missing_user", 2): "'u' is empty",
        ("events", "missing_item", 3): "'i' is empty",
        ("events", "missing_timestamp", 4): "'t' is empty",
        ("events", "invalid_timestamp", 5): "t 'soon' is not epoch seconds between 1970 and 2099",
        ("events", "missing_rating", 6): "'r' is empty",
        ("events", "rating_not_numeric", 7): "r 'four' is not a number",
        (
            "events",
            "rating_below_thresholds",
            8,
        ): "r '1' is below the lowest threshold 3 and no rating_below type is set",
        ("events", "malformed_row", 9): "5 fields where the header has 4",
        ("events", "unknown_item", 10): "i 'zzz' is not in the items file",
        ("events", "missing_event_type", 2): "'e' is empty",
        ("events", "unmapped_event_type", 3): "e 'like' is not one of ['view', 'click', 'add_to_favorites', "
        "'contact_seller', 'purchase'] (add it to the event map)",
    }


def test_items_file_with_every_field_list_categories_and_conditions(tmp_path: Path):
    items = pa.table(
        {
            "id": ["1", "2", "3"],
            "name": ["Sofa", "", "Lamp"],
            "text": ["grey, 3 seats", None, "  desk lamp  "],
            "tags": pa.array([["Home", "Living", "Sofas", "Corner"], [], None], pa.list_(pa.string())),
            "maker": ["Ikea", None, "Acme"],
            "eur": [120.0, None, 15.5],
            "city": ["Berlin", "", "Rome"],
            "state": ["Like New", "broken", None],
            "listed": ["2015-02-01T10:00:00+01:00", None, "2015-02-03"],
            "img": ["http://x/1.jpg", None, None],
        }
    )
    path = tmp_path / "items.parquet"
    pq.write_table(items, path)
    keys = ("title", "description", "category", "brand", "price", "location", "condition", "created_at", "image_url")
    cols = ("name", "text", "tags", "maker", "eur", "city", "state", "listed", "img")
    item_flags = {"id": "id", "currency_code": "EUR", **dict(zip(keys, cols, strict=True))}
    ratings = tmp_path / "r.csv"
    ratings.write_text("u,i,t\n1,1,2015-03-02T09:00:00Z\n1,2,2015-03-02T09:01:00Z\n")
    events = {"user": "u", "item": "i", "timestamp": "t", "event_type": "click"}
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    mapping = build_mapping(None, events, item_flags, None, has_items_file=True)
    report = import_logs(lake, [str(ratings)], mapping, items=str(path), rejects_path=tmp_path / "rej.jsonl")
    catalog = {r["item_id"]: r for r in lines(lake.get_bytes(report.catalog_key))}
    assert catalog["1"] == {
        "item_id": "1",
        "title": "Sofa",
        "description": "grey, 3 seats",
        "category_path": "Home > Living > Sofas",
        "price": 120.0,
        "currency": "EUR",
        "brand": "Ikea",
        "location": "Berlin",
        "condition": "like_new",
        "image_url": "http://x/1.jpg",
        "created_at": "2015-02-01T09:00:00Z",
    }
    two, three = catalog["2"], catalog["3"]
    assert (two["title"], two["category_path"], two["price"], two["location"], two["condition"]) == (
        "2",
        UNKNOWN,
        None,
        UNKNOWN,
        UNKNOWN,
    )
    assert two["created_at"] == "2015-03-02T09:01:00Z"  # empty: its first interaction
    assert three["description"] == "  desk lamp  " and three["condition"] == UNKNOWN
    assert three["created_at"] == "2015-02-03T00:00:00Z"  # a date, taken as UTC midnight
    notes = "\n".join(report.notes)
    for text in (
        "1 item(s) with an empty title: title is the item id",
        "1 category value(s) with more than 3 levels",
        "1 item(s) with an empty price: price null",
        "1 item(s) with an empty location",
        "condition values outside new, like_new, used, for_parts set to 'unknown': {'broken': 1}",
        "1 created_at value(s) had no time zone",
    ):
        assert text in notes, text
    raw_lines = gzip.decompress(lake.get_bytes(report.catalog_key)).decode().splitlines()
    validated = validate_catalog(raw_lines, report.first_day)
    assert validated.counts["valid"] == 3 and validated.counts["quarantined"] == 0


# --- RetailRocket: events only ----------------------------------------------------------------


def test_retailrocket_events_without_items_file(local_lake: Lake, tmp_path: Path):
    report = import_logs(local_lake, [str(RR / "events.csv")], rr_mapping(), rejects_path=tmp_path / "r.jsonl")
    assert report.events_by_type == {"view": 11, "add_to_favorites": 3, "purchase": 2}
    assert report.event_rejects == {"invalid_timestamp": 1, "missing_user": 1, "unmapped_event_type": 1}
    assert (report.first_day, report.last_day, report.empty_days) == ("2015-06-02", "2015-06-04", 0)
    assert report.items_from_file == 0 and report.items_added == report.catalog_items == 7
    assert any("epoch milliseconds (detected" in n for n in report.notes)
    by_day = events_by_day(local_lake)
    assert {d: len(v) for d, v in by_day.items()} == {"2015-06-02": 9, "2015-06-03": 4, "2015-06-04": 3}
    # Milliseconds kept; the event at .999 before midnight stays on its day.
    assert by_day["2015-06-02"][0]["timestamp"] == "2015-06-02T05:02:12.117000Z"
    assert by_day["2015-06-02"][-1]["timestamp"] == "2015-06-02T23:59:59.999000Z"
    catalog = lines(local_lake.get_bytes(report.catalog_key))
    assert {(r["title"] == r["item_id"], r["category_path"], r["condition"], r["price"]) for r in catalog} == {
        (True, UNKNOWN, UNKNOWN, None)
    }
    unmapped = [r for r in rejects_of(tmp_path / "r.jsonl") if r["reason"] == "unmapped_event_type"]
    assert unmapped[0]["row"] == 4 and unmapped[0]["raw"]["event"] == "share"


# --- formats, readers, S3 ---------------------------------------------------------------------


def _strings_table() -> pa.Table:
    names = ["userId", "movieId", "rating", "timestamp"]
    return pacsv.read_csv(
        ML / "ratings.csv", convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
    )


def _without_ids(lake: Lake) -> dict[str, list[dict]]:
    return {d: [{k: v for k, v in e.items() if k != "event_id"} for e in evs] for d, evs in events_by_day(lake).items()}


def _typed(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def test_tsv_parquet_and_jsonl_gz_give_the_same_events(tmp_path: Path):
    reference = Lake.from_uri(f"file://{tmp_path / 'ref'}")
    import_ml(reference, tmp_path)
    expected = _without_ids(reference)

    tsv = tmp_path / "ratings.tsv"
    tsv.write_text((ML / "ratings.csv").read_text().replace(",", "\t"))
    parquet = tmp_path / "ratings.parquet"
    pq.write_table(_strings_table(), parquet)
    # JSON numbers as numbers, except the bad values: the column types change between lines,
    # so pyarrow refuses the file and it is read line by line.
    jsonl = tmp_path / "ratings.jsonl.gz"
    with gzip.open(jsonl, "wt") as fh:
        for row in _strings_table().to_pylist():
            fh.write(json.dumps({k: _typed(v) for k, v in row.items()}) + "\n")
    for path in (tsv, parquet, jsonl):
        lake = Lake.from_uri(f"file://{tmp_path / path.name}-lake")
        report = import_ml(lake, tmp_path, ratings=path)
        assert _without_ids(lake) == expected, path.name
        assert report.event_rejects == {"invalid_timestamp": 1, "missing_user": 1, "rating_not_numeric": 1}
        (events_source,) = [s for s in report.sources if s["kind"] == "events"]
        assert bool(events_source["fallback"]) == (path is jsonl), events_source
    # The JSON reject keeps the line's own values (numbers stay numbers).
    (rej,) = [r for r in rejects_of(tmp_path / "rejects.jsonl") if r["reason"] == "missing_user"]
    assert rej["raw"] == {"userId": "", "movieId": 3, "rating": 4.0, "timestamp": 1425344400}


def test_headerless_tsv_and_clean_jsonl(tmp_path: Path):
    """MovieLens 100k's u.data (tab-separated, no header: columns are named 1..n) and a
    JSONL file pyarrow reads in one go (typed numbers, a key some lines lack)."""
    udata = tmp_path / "u.data"
    udata.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    flags = {"user": "1", "item": "2", "rating": "3", "timestamp": "4", "rating_thresholds": "click=3"}
    mapping = build_mapping(None, {**flags, "rating_below": "view", "format": "tsv", "header": False}, {}, None, False)
    report = import_logs(lake, [str(udata)], mapping, rejects_path=tmp_path / "r.jsonl")
    assert report.events_by_type == {"view": 1, "click": 2} and report.event_rejects == {}
    assert (report.first_day, report.last_day) == ("1997-11-07", "1998-04-04")

    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        '{"u": 7, "i": "x", "t": "2015-03-02T10:00:00+01:00", "d": "Mobile"}\n\n'
        '{"u": 8, "i": "y", "t": "2015-03-02T11:00:00", "s": "abc", "d": "fridge"}\n'
    )
    events = {"user": "u", "item": "i", "timestamp": "t", "session": "s", "device": "d", "event_type": "view"}
    report = import_logs(lake, [str(jsonl)], build_mapping(None, events, {}, None, False), rejects_path=tmp_path / "r")
    (src,) = report.sources
    assert src["fallback"] == "" and src["rows_read"] == 2
    evs = events_by_day(lake)["2015-03-02"]
    assert [(e["user_id"], e["timestamp"], e["session_id"], e["device_type"]) for e in evs] == [
        ("7", "2015-03-02T09:00:00Z", None, "mobile"),
        ("8", "2015-03-02T11:00:00Z", "abc", UNKNOWN),
    ]
    assert [e["event_id"].split("-")[1] for e in evs] == ["1", "2"]  # the blank line is not a record
    notes = "\n".join(report.notes)
    assert "1 event time(s) had no time zone and were taken as UTC" in notes
    assert "device values outside mobile, desktop, tablet set to 'unknown': {'fridge': 1}" in notes


def test_typed_parquet_with_timestamp_and_float_ids(tmp_path: Path):
    table = pa.table(
        {
            "user": pa.array([1.0, 2.0, np.nan]),  # pandas-style float ids with a missing one
            "item": pa.array(["a", "b", "a"]),
            "ts": pa.array([1_425_286_800_000_000, 1_425_373_200_000_000, 0], pa.timestamp("us")),  # naive
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    mapping = build_mapping(
        None, {"user": "user", "item": "item", "timestamp": "ts", "event_type": "click"}, {}, None, False
    )
    report = import_logs(lake, [str(path)], mapping, rejects_path=tmp_path / "r.jsonl")
    assert report.event_rejects == {"missing_user": 1}
    by_day = events_by_day(lake)
    assert [(e["user_id"], e["timestamp"], e["event_type"]) for d in sorted(by_day) for e in by_day[d]] == [
        ("1", "2015-03-02T09:00:00Z", "click"),
        ("2", "2015-03-03T09:00:00Z", "click"),
    ]
    assert any("a timestamp column" in n for n in report.notes)
    assert any("2 event time(s) had no time zone and were taken as UTC" in n for n in report.notes)


def test_a_malformed_csv_row_is_rejected_and_the_other_rows_keep_their_numbers(tmp_path: Path):
    text = (ML / "ratings.csv").read_text().replace("4,5,4.0,1425405780", "4,5,4.0,1425405780,extra")
    bad = tmp_path / "ratings.csv"
    bad.write_text(text)
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    report = import_ml(lake, tmp_path, ratings=bad)
    assert report.event_rejects["malformed_row"] == 1 and report.events_written == 16
    (src,) = [s for s in report.sources if s["kind"] == "events"]
    assert "Expected 4 columns, got 5" in src["fallback"]
    (rej,) = [r for r in rejects_of(tmp_path / "rejects.jsonl") if r["reason"] == "malformed_row"]
    assert rej["row"] == 15 and rej["raw"] == ["4", "5", "4.0", "1425405780", "extra"]
    # The exact reader numbers records like pyarrow does: same id suffixes as the clean file.
    reference = Lake.from_uri(f"file://{tmp_path / 'ref'}")
    import_ml(reference, tmp_path)
    suffixes = lambda lk: sorted(e["event_id"].split("-")[1] for d in events_by_day(lk).values() for e in d)  # noqa: E731
    assert suffixes(lake) == [s for s in suffixes(reference) if s != "15"]


def test_s3_sources_into_an_s3_lake(s3_lake: Lake, moto_server: str, tmp_path: Path):
    import boto3

    bucket = "user-logs"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="ml/ratings.csv.gz", Body=gzip.compress((ML / "ratings.csv").read_bytes()))
    client.put_object(Bucket=bucket, Key="ml/movies.csv", Body=(ML / "movies.csv").read_bytes())
    report = import_logs(
        s3_lake,
        [f"s3://{bucket}/ml/ratings.csv.gz"],
        ml_mapping(),
        items=f"s3://{bucket}/ml/movies.csv",
        rejects_path=tmp_path / "rejects.jsonl",
        s3=S3Options(endpoint_url=moto_server, region="us-east-1"),
    )
    assert report.events_written == 17 and report.days == 5 and report.items_added == 1
    assert {d: len(v) for d, v in events_by_day(s3_lake).items()} == ML_EVENTS_PER_DAY
    assert (
        events_by_day(s3_lake)["2015-03-02"][0]["event_id"] == f"{source_token('s3://user-logs/ml/ratings.csv.gz')}-1"
    )
    assert s3_lake.exists(f"{LANDING_CATALOG}/dt=2015-03-02/catalog.jsonl.gz")


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,unit",
    [
        (pa.array([1425286800, 1425373200]), "s"),
        (pa.array([1425286800.5]), "s"),
        (pa.array(["1425286800", "yesterday", "1425373200"]), "s"),
        (pa.array([1433221332117, 1433224214164]), "ms"),
        (pa.array(["1433221332117"]), "ms"),
        (pa.array(["2015-03-02T09:00:00Z", "1425286800", "2015-03-02 10:00"]), "iso"),
        (pa.array([None, 1425286800]), "s"),
    ],
)
def test_timestamp_unit_is_detected_from_the_values(values, unit):
    assert C.detect_unit(values)[0] == unit


def test_microsecond_epochs_are_refused_with_a_clear_error():
    with pytest.raises(C.ColumnError, match="microseconds or nanoseconds"):
        C.detect_unit(pa.array([1_425_286_800_000_000]))


def test_iso_timestamps_zones_naive_and_bad_values():
    values = pa.array(
        [
            "2015-03-02T10:00:00+02:00",
            "2015-03-02T08:00:00Z",
            "2015-03-02 08:00:00",  # naive: UTC
            "20150302T080000Z",  # basic format: not pyarrow's, Python's parser takes it
            "2015-02-30T08:00:00Z",
            "1899-12-31T00:00:00Z",  # out of range
            "",
            "2015-03-02",  # a date: midnight, naive (its "-02" is no zone)
        ]
    )
    ts = C.timestamps(values, "iso")
    expected = 1_425_283_200 * C.US_PER_S
    assert ts.us[:4].tolist() == [expected] * 4 and ts.us[7] == expected - 8 * 3600 * C.US_PER_S
    assert ts.bad.tolist() == [False] * 4 + [True, True, False, False]
    assert ts.missing.tolist() == [False] * 6 + [True, False]
    assert ts.naive.tolist() == [False, False, True, False, False, False, False, True]
    # Above, the zoned values fell back to Python's parser as a group (two of them are not
    # pyarrow's); one at a time, those pyarrow parses take its cast: both agree.
    one_by_one = [C.timestamps(pa.array([v]), "iso") for v in values.to_pylist()]
    assert [t.us[0] for t in one_by_one] == ts.us.tolist()
    assert [bool(t.naive[0]) for t in one_by_one] == ts.naive.tolist()


def test_stated_unit_wins_over_detection(local_lake: Lake, tmp_path: Path):
    report = import_ml(local_lake, tmp_path, mapping=ml_mapping(timestamp_unit="ms"))
    assert report.first_day == "1970-01-17"  # seconds read as milliseconds: the user said so
    assert any("epoch milliseconds (stated)" in n for n in report.notes)


# --- the mapping: file, flags, errors ----------------------------------------------------------


def test_flags_override_the_mapping_file(local_lake: Lake, tmp_path: Path):
    from recsys_dagster.ingest.import_args import mapping_from_args

    args = cli.build_parser().parse_args(
        [
            "import",
            str(ML / "ratings.csv"),
            "--items",
            str(ML / "movies.csv"),
            "--mapping",
            str(ML / "mapping.toml"),
            "--rating-thresholds",
            "purchase=4.5,click=2",
            "--items-category-separator",
            "/",
            "--items-currency-code",
            "EUR",
        ]
    )
    mapping = mapping_from_args(args)
    assert mapping.events.rating_thresholds == {"purchase": 4.5, "click": 2.0}
    assert mapping.events.rating_below == "view" and mapping.events.user == "userId"  # from the file
    assert mapping.items is not None and mapping.items.category_separator == "/"
    report = import_logs(local_lake, args.events, mapping, items=args.items, rejects_path=tmp_path / "r.jsonl")
    # >= 4.5 purchase, >= 2 click, below (1.0 and 0.5): view from the file
    assert report.events_by_type == {"view": 2, "click": 9, "purchase": 6}
    catalog = {r["item_id"]: r for r in lines(local_lake.get_bytes(report.catalog_key))}
    assert catalog["2"]["category_path"] == "Adventure|Children|Fantasy"  # "/" does not split "|"
    assert catalog["2"]["currency"] == "EUR" and catalog["999"]["currency"] == UNKNOWN


@pytest.mark.parametrize(
    "events,message",
    [
        ({"user": "u", "item": "i", "timestamp": "t"}, "say where the event type comes from"),
        ({"user": "u", "item": "i", "timestamp": "t", "event": "e", "rating": "r"}, "exactly one of"),
        ({"user": "u", "item": "i", "timestamp": "t", "rating": "r"}, "needs events.rating_thresholds"),
        ({"user": "u", "item": "i", "timestamp": "t", "event": "e", "event_map": "a=like"}, "'like'] are not event"),
        ({"user": "u", "item": "i", "timestamp": "t", "event": "e", "event_map": "a"}, "expected KEY=VALUE"),
        ({"user": "u", "item": "i", "timestamp": "t", "rating": "r", "rating_thresholds": "click=x"}, "not a number"),
        ({"item": "i", "timestamp": "t", "event_type": "view"}, r"no column given for \['user'\]"),
        ({"user": "u", "item": "i", "timestamp": "t", "event_type": "view", "timestamp_unit": "h"}, "timestamp_unit"),
    ],
)
def test_mapping_errors_say_what_is_wrong(events, message):
    with pytest.raises(MappingError, match=message):
        build_mapping(None, events, {}, None, has_items_file=False)


def test_mapping_file_unknown_keys_are_errors(tmp_path: Path):
    path = tmp_path / "m.toml"
    path.write_text('[events]\nuser = "u"\nusr = "x"\n')
    with pytest.raises(MappingError, match=r"unknown key\(s\) \['usr'\]"):
        read_mapping_file(path)
    with pytest.raises(MappingError, match="but no items file"):
        build_mapping(None, {**RR_FLAGS}, {"title": "t"}, None, has_items_file=False)


# --- the command: report, project file ----------------------------------------------------------


def test_cli_import_prints_the_report_and_sets_the_start_date(tmp_path: Path, monkeypatch, capsys):
    project = tmp_path / "recsys.toml"
    project.write_text('training_window_days = 14\nstart_date = "2026-10-05"\n')
    monkeypatch.setenv("RECSYS_CONFIG", str(project))
    monkeypatch.delenv("RECSYS_START_DATE", raising=False)
    monkeypatch.chdir(tmp_path)
    lake_uri = f"file://{tmp_path / 'lake'}"
    argv = ["import", str(RR / "events.csv"), "--lake", lake_uri]
    argv += [x for k, v in RR_FLAGS.items() for x in (f"--{k.replace('_', '-')}", v)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "events written: 16 (view 11, add_to_favorites 3, purchase 2)" in out
    assert "interactions: unmapped_event_type 1" in out
    assert "days: 2015-06-02..2015-06-04 (3 day(s), 0 without events)" in out
    assert f"set start_date = 2015-06-02 in {project}" in out
    assert "--partition-range 2015-06-02...2015-06-04" in out and "recsys train --until 2015-06-04" in out
    assert (tmp_path / "recsys-import-rejects.jsonl").is_file()  # the default, in the cwd
    text = project.read_text()
    assert 'start_date = "2015-06-02"' in text and "training_window_days = 14" in text  # the window stays

    project.write_text('start_date = "2026-10-05"\n')
    assert cli.main([*argv, "--no-set-start-date"]) == 0
    assert project.read_text() == 'start_date = "2026-10-05"\n'


def test_cli_import_errors_exit_2_with_the_reason(tmp_path: Path, capsys):
    argv = ["import", str(tmp_path / "nope.csv"), "--user", "u", "--item", "i", "--timestamp", "t"]
    assert cli.main([*argv, "--event-type", "view", "--lake", f"file://{tmp_path}/lake", "--no-set-start-date"]) == 2
    assert "import failed:" in capsys.readouterr().err


# --- the rest of the pipeline takes imported data ---------------------------------------------


def test_daily_ingestion_validates_imported_days_with_nothing_quarantined(local_lake: Lake, tmp_path: Path):
    from recsys_dagster.checks.suites import run_suite
    from recsys_dagster.contract import CATALOG, EVENTS, day_prefix
    from recsys_dagster.ingest.pipeline import ingest_catalog_partition, ingest_events_partition

    report = import_ml(local_lake, tmp_path)
    for dt in ("2015-03-02", "2015-03-03", "2015-03-06"):  # the days with events
        catalog = ingest_catalog_partition(local_lake, dt)
        assert catalog.counts["quarantined"] == 0 and catalog.counts["valid"] == report.catalog_items
        events = ingest_events_partition(local_lake, dt)
        assert events.counts["quarantined"] == 0, events.counts
        assert events.counts["valid"] == ML_EVENTS_PER_DAY[dt]
    # The GX suites take the explicit unknowns (device, condition) and the null prices.
    for name, prefix in (("events", day_prefix(EVENTS, "2015-03-02")), ("catalog", day_prefix(CATALOG, "2015-03-02"))):
        result = run_suite(name, local_lake.read_parquet(prefix).to_pandas())
        assert result.success, result.failed


def test_landing_validation_takes_unknown_values_and_a_null_price():
    event = {
        "event_id": "e1",
        "user_id": "u1",
        "session_id": None,
        "item_id": "i1",
        "event_type": "view",
        "timestamp": "2015-03-02T09:00:00Z",
        "device_type": UNKNOWN,
    }
    result = validate_events([json.dumps(event), json.dumps({**event, "event_id": "e2", "device_type": "fridge"})],
                             "2015-03-02", {"i1"})  # fmt: skip
    assert result.valid.column("device_type").to_pylist() == [UNKNOWN]
    assert result.quarantine.column("reason").to_pylist() == ["invalid_device_type"]
    item = {
        "item_id": "i1",
        "title": "t",
        "description": None,
        "category_path": UNKNOWN,
        "price": None,
        "currency": UNKNOWN,
        "brand": None,
        "location": UNKNOWN,
        "condition": UNKNOWN,
        "image_url": None,
        "created_at": "2015-03-02T09:00:00Z",
    }
    no_price = {k: v for k, v in item.items() if k != "price"}
    result = validate_catalog([json.dumps(item), json.dumps({**no_price, "item_id": "i2"})], "2015-03-02")
    assert result.valid.column("price").to_pylist() == [None]  # null: unknown, not 0
    assert result.quarantine.column("reason").to_pylist() == ["missing_field"]  # price must be there, even null


def test_item_features_put_unknowns_and_null_prices_in_index_0():
    from recsys_dagster.ml.features import ItemFeatures

    items = pa.table(
        {
            "item_id": ["a", "b", "c"],
            "title": ["a", "Blue bike", "c"],
            "category_path": [UNKNOWN, "Sports > Bikes", UNKNOWN],
            "category_l1": [UNKNOWN, "Sports", UNKNOWN],
            "category_l2": ["", "Bikes", ""],
            "price": pa.array([None, 120.0, None], pa.float64()),
            "brand": [None, "Acme", None],
            "location": [UNKNOWN, "Berlin", UNKNOWN],
            "condition": [UNKNOWN, "used", UNKNOWN],
        }
    )
    features = ItemFeatures.fit(items)
    assert UNKNOWN not in features.vocabs["condition"] + features.vocabs["city"] + features.vocabs["l1"]
    arrays = features.encode(items)
    for name in ("price", "condition", "city", "l1", "l2", "path", "brand"):
        assert getattr(arrays, name).tolist()[0] == 0 and getattr(arrays, name).tolist()[1] > 0, name


def test_items_reread_on_the_exact_path_are_not_taken_for_duplicates(local_lake: Lake, tmp_path: Path, monkeypatch):
    """pyarrow reads the first blocks, then fails on a malformed row: the file is read again
    row by row, and the items of the first pass are not duplicates of themselves."""
    from recsys_dagster.ingest import sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 256)  # several blocks before the bad row
    movies = tmp_path / "movies.csv"
    rows = [f"{i},Movie number {i} with a longish title,Comedy|Drama" for i in range(1, 41)]
    movies.write_text("movieId,title,genres\n" + "\n".join(rows) + "\n41,Bad,Drama,one field too many\n")
    report = import_logs(
        local_lake,
        [str(ML / "ratings.csv")],
        items=str(movies),
        rejects_path=tmp_path / "r.jsonl",
        mapping=ml_mapping(),
    )
    reasons = [r["reason"] for r in rejects_of(tmp_path / "r.jsonl") if r["kind"] == "items"]
    assert "duplicate_item_id" not in reasons and len(reasons) == 1, reasons
    catalog = lines(local_lake.get_bytes(f"{LANDING_CATALOG}/dt={ML_DAYS[0]}/catalog.jsonl.gz"))
    titles = {c["item_id"]: c["title"] for c in catalog}
    assert all(titles[str(i)].startswith("Movie number") for i in range(1, 41)), report
