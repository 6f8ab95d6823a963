"""Read a user's CSV / TSV / Parquet / JSONL file (optionally .gz; local or s3://) in chunks.

The fast path is pyarrow's streaming readers (CSV columns all read as strings, so a bad
value in one row never fails the whole column). When pyarrow cannot parse a CSV or JSONL
file (a row with the wrong number of fields, a malformed JSON line, a field whose JSON type
changes between lines), the caller drops what it read of that file and reads it again on
the exact path: Python's `csv` / `json` record by record, where each unreadable record
becomes a `Malformed` entry with its record number. Both paths number records the same
way (1-based, header excluded, blank lines skipped), so record numbers, and the event ids
derived from them, do not depend on the path taken.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recsys_dagster.ingest.mapping import FORMATS, FileOptions

EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
DEFAULT_DELIMITERS = {"csv": ",", "tsv": "\t"}
BLOCK_BYTES = 16 << 20  # pyarrow CSV/JSON block: one chunk per block
EXACT_CHUNK_ROWS = 100_000
PARQUET_BATCH_ROWS = 256_000


class SourceError(ValueError):
    """An input file cannot be read at all (missing, unknown format, not UTF-8, ...)."""


class FastPathFailed(Exception):
    """pyarrow could not parse the file; read it again on the exact path."""


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Source:
    uri: str  # absolute local path or s3://bucket/key: part of every event id from this file
    format: str
    gzip: bool
    delimiter: str | None
    header: bool


@dataclass(frozen=True)
class Malformed:
    """A record the reader could not split into columns."""

    row: int
    raw: Any  # the line (JSON) or the fields (CSV) as read
    detail: str


@dataclass
class Chunk:
    table: pa.Table  # the file's columns as read
    rows: np.ndarray  # int64 record numbers of the table's rows
    malformed: list[Malformed] = field(default_factory=list)
    originals: list[dict[str, Any]] | None = None  # exact JSON path: the objects as parsed (for rejects)


def resolve_source(path: str, opts: FileOptions) -> Source:
    parsed = urlparse(path)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc or not parsed.path.strip("/"):
            raise SourceError(f"{path}: an S3 source needs s3://bucket/key")
        uri = f"s3://{parsed.netloc}/{parsed.path.lstrip('/')}"
    elif parsed.scheme in ("", "file"):
        local = Path(path[len("file://") :] if path.startswith("file://") else path).expanduser().resolve()
        if not local.is_file():
            raise SourceError(f"{path}: no such file")
        uri = str(local)
    else:
        raise SourceError(f"{path}: unsupported scheme {parsed.scheme!r} (use a local path or s3://)")
    name = uri.rsplit("/", 1)[-1].lower()
    gz = name.endswith(".gz")
    stem = name[: -len(".gz")] if gz else name
    fmt = opts.format or EXTENSIONS.get(os.path.splitext(stem)[1])
    if fmt is None:
        raise SourceError(f"{path}: cannot tell the format from the name; give it ({', '.join(FORMATS)})")
    if fmt == "parquet" and gz:
        raise SourceError(f"{path}: a gzipped Parquet file is not supported (Parquet compresses its pages itself)")
    if fmt == "parquet" and (opts.delimiter is not None or not opts.header):
        raise SourceError(f"{path}: delimiter/header options apply to csv and tsv only")
    delimiter = opts.delimiter if opts.delimiter is not None else DEFAULT_DELIMITERS.get(fmt)
    if delimiter is not None and len(delimiter) != 1:
        raise SourceError(f"{path}: the delimiter must be one character, got {delimiter!r}")
    return Source(uri=uri, format=fmt, gzip=gz, delimiter=delimiter, header=opts.header)


def filesystem(uri: str, s3: S3Options) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        kwargs: dict[str, Any] = {"region": s3.region or "us-east-1"}
        if s3.endpoint_url:
            ep = urlparse(s3.endpoint_url)
            kwargs["endpoint_override"] = ep.netloc or s3.endpoint_url
            kwargs["scheme"] = ep.scheme or "https"
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :]
    return pafs.LocalFileSystem(), uri


class Reader:
    """Chunks of one source, on the fast or the exact path. `time_columns`: JSON columns that
    pyarrow must not turn into timestamps itself (it drops whether a value had a zone)."""

    def __init__(self, src: Source, s3: S3Options, time_columns: tuple[str, ...] = ()):
        self.src = src
        self.fs, self.path = filesystem(src.uri, s3)
        self.time_columns = time_columns

    def _stream(self) -> pa.NativeFile:
        try:
            return self.fs.open_input_stream(self.path, compression="gzip" if self.src.gzip else None)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.src.uri}: cannot open: {exc}") from exc

    def chunks(self, exact: bool) -> Iterator[Chunk]:
        fmt = self.src.format
        if fmt == "parquet":
            yield from self._parquet()
        elif exact:
            yield from self._csv_exact() if fmt in ("csv", "tsv") else self._jsonl_exact()
        else:
            yield from self._csv_fast() if fmt in ("csv", "tsv") else self._jsonl_fast()

    # --- Parquet ------------------------------------------------------------------------
    def _parquet(self) -> Iterator[Chunk]:
        try:
            pf = pq.ParquetFile(self.fs.open_input_file(self.path))
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.src.uri}: not a readable Parquet file: {exc}") from exc
        start = 1
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            yield Chunk(table, np.arange(start, start + table.num_rows, dtype=np.int64))
            start += table.num_rows

    # --- CSV / TSV ----------------------------------------------------------------------
    def _text(self) -> io.TextIOWrapper:
        return io.TextIOWrapper(self._stream(), encoding="utf-8", newline="")

    def _column_names(self) -> list[str]:
        """The header's names, or "1".."n" from the first record without a header."""
        try:
            with self._text() as text:
                first = next((r for r in csv.reader(text, delimiter=self.src.delimiter) if r), None)
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.src.uri}: not UTF-8 text ({exc}); convert it first, e.g. with iconv") from exc
        if first is None:
            raise SourceError(f"{self.src.uri}: the file is empty")
        if not self.src.header:
            return [str(i) for i in range(1, len(first) + 1)]
        names = [n.strip() for n in first]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup or any(not n for n in names):
            raise SourceError(f"{self.src.uri}: the header has empty or repeated column names {dup or names}")
        return names

    def _csv_fast(self) -> Iterator[Chunk]:
        names = self._column_names()
        yield from _streamed(lambda: self._open_csv(names))

    def _open_csv(self, names: list[str]) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            self._stream(),
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1 if self.src.header else 0, block_size=BLOCK_BYTES, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(delimiter=self.src.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )

    def _csv_exact(self) -> Iterator[Chunk]:
        names = self._column_names()
        first = "the header" if self.src.header else "the first record"
        cols: list[list[str]] = [[] for _ in names]
        rows: list[int] = []
        malformed: list[Malformed] = []
        row = 0
        try:
            with self._text() as text:
                records = csv.reader(text, delimiter=self.src.delimiter, strict=True)
                if self.src.header:
                    next((r for r in records if r), None)
                while True:
                    try:
                        rec = next(records)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        row += 1
                        malformed.append(Malformed(row, None, f"CSV parse error near line {records.line_num}: {exc}"))
                        continue
                    if not rec:
                        continue
                    row += 1
                    if len(rec) != len(names):
                        malformed.append(Malformed(row, rec, f"{len(rec)} fields where {first} has {len(names)}"))
                    else:
                        rows.append(row)
                        for c, v in zip(cols, rec, strict=True):
                            c.append(v)
                    if len(rows) >= EXACT_CHUNK_ROWS:
                        yield self._exact_chunk(names, cols, rows, malformed)
                        cols, rows, malformed = [[] for _ in names], [], []
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.src.uri}: not UTF-8 text ({exc}); convert it first, e.g. with iconv") from exc
        if rows or malformed:
            yield self._exact_chunk(names, cols, rows, malformed)

    @staticmethod
    def _exact_chunk(names: list[str], cols: list[list[Any]], rows: list[int], malformed: list[Malformed]) -> Chunk:
        table = pa.table({n: _exact_array(c) for n, c in zip(names, cols, strict=True)})
        return Chunk(table, np.asarray(rows, dtype=np.int64), malformed)

    # --- JSON Lines ---------------------------------------------------------------------
    def _jsonl_fast(self) -> Iterator[Chunk]:
        options = pajson.ReadOptions(block_size=BLOCK_BYTES, use_threads=False)
        first = self._first_object()
        # Time columns whose first value is text stay text (numbers stay numbers: epochs).
        text = [c for c in self.time_columns if isinstance(first.get(c), str)]
        parse = pajson.ParseOptions(
            explicit_schema=pa.schema([(c, pa.string()) for c in text]), unexpected_field_behavior="infer"
        )
        yield from _streamed(lambda: pajson.open_json(self._stream(), read_options=options, parse_options=parse))

    def _first_object(self) -> dict[str, Any]:
        """The first JSON line as an object ({} when it is not one: pyarrow will say why)."""
        try:
            with self._text() as text:
                line = next((x for x in text if x.strip()), "")
            obj = json.loads(line) if line else {}
        except (UnicodeDecodeError, ValueError):
            return {}
        return obj if isinstance(obj, dict) else {}

    def _jsonl_exact(self) -> Iterator[Chunk]:
        objs: list[dict[str, Any]] = []
        rows: list[int] = []
        malformed: list[Malformed] = []
        row = 0
        try:
            with self._text() as text:
                for line in text:
                    if not line.strip():
                        continue
                    row += 1
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        malformed.append(Malformed(row, line.rstrip("\r\n"), f"not valid JSON: {exc}"))
                        continue
                    if not isinstance(obj, dict):
                        malformed.append(Malformed(row, line.rstrip("\r\n"), "not a JSON object"))
                        continue
                    objs.append(obj)
                    rows.append(row)
                    if len(rows) >= EXACT_CHUNK_ROWS:
                        yield _objects_chunk(objs, rows, malformed)
                        objs, rows, malformed = [], [], []
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.src.uri}: not UTF-8 text ({exc})") from exc
        if rows or malformed:
            yield _objects_chunk(objs, rows, malformed)


def _streamed(open_reader: Callable[[], Any]) -> Iterator[Chunk]:
    """Chunks of a pyarrow streaming reader (CSV or JSON); a parse error, also while opening
    (which parses the first block), means: read the file on the exact path."""
    try:
        reader = open_reader()
    except pa.ArrowInvalid as exc:
        raise FastPathFailed(str(exc)) from exc
    start = 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise FastPathFailed(str(exc)) from exc
        table = pa.Table.from_batches([batch])
        yield Chunk(table, np.arange(start, start + table.num_rows, dtype=np.int64))
        start += table.num_rows


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as the text the fast path's casts produce (1 -> "1", 2.0 -> "2")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _exact_array(values: list[Any]) -> pa.Array:
    """Exact-path column: strings, or list<string> when any value is a list."""
    if any(isinstance(v, list) for v in values):
        return pa.array(
            [None if v is None else [scalar_text(x) for x in (v if isinstance(v, list) else [v])] for v in values],
            pa.list_(pa.string()),
        )
    return pa.array([scalar_text(v) for v in values], pa.string())


def _objects_chunk(objs: list[dict[str, Any]], rows: list[int], malformed: list[Malformed]) -> Chunk:
    """Objects -> columns (a key a line lacks is null there). Lines of only `{}` give a table
    without columns: `Chunk.rows` carries the row count."""
    names = list(dict.fromkeys(k for o in objs for k in o))
    table = pa.table({n: _exact_array([o.get(n) for o in objs]) for n in names})
    return Chunk(table, np.asarray(rows, dtype=np.int64), malformed, originals=objs)
