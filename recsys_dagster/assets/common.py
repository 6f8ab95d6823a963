"""Small helpers shared by the asset modules: config derived from the plain dataclasses,
and metadata formatting."""

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Config, MetadataValue
from pydantic import Field

T = typing.TypeVar("T")


def config_from(plain: type, *, exclude: Sequence[str] = (), doc: str | None = None) -> type[Config]:
    """A Dagster `Config` whose fields (type, default, description) are those of the plain
    dataclass `plain`, so every default is declared once, in the module that uses it.
    Fields in `exclude` come from resources or settings instead of run config."""
    hints = typing.get_type_hints(plain)
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for f in dataclasses.fields(plain):
        if f.name in exclude:
            continue
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{plain.__name__}.{f.name} needs a plain default to become run config")
        annotations[f.name] = hints[f.name]
        namespace[f.name] = Field(default=f.default, description=f.metadata.get("doc"))
    namespace["__annotations__"] = annotations
    namespace["__doc__"] = doc or plain.__doc__
    namespace["__module__"] = plain.__module__
    return type(f"{plain.__name__}Settings", (Config,), namespace)


def to_plain(config: Config, plain: type[T], **overrides: Any) -> T:
    """The plain dataclass from a derived config (plus values from resources/settings)."""
    names = {f.name for f in dataclasses.fields(plain)}
    values = {k: v for k, v in config.model_dump().items() if k in names}
    return plain(**{**values, **overrides})


def md_table(rows: Sequence[Mapping[str, Any]], max_rows: int = 10, max_width: int = 60) -> MetadataValue:
    """A markdown preview of records (lists shortened), for the asset's page in the UI."""
    rows = list(rows)[:max_rows]
    if not rows:
        return MetadataValue.md("_empty_")
    cols = list(rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v[:5])) + (f", … ({len(v)})" if len(v) > 5 else "")
        s = str(v).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines))


def md_kv(mapping: Mapping[str, Any], key: str = "key", value: str = "value") -> MetadataValue:
    lines = [f"| {key} | {value} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in mapping.items()]
    return MetadataValue.md("\n".join(lines))


def numeric(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numbers as top-level metadata entries, which the UI plots across partitions/runs."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = float(v) if isinstance(v, float) else int(v)
    return out
