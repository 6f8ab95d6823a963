"""Small helpers shared by the asset modules: metadata formatting and run context."""


from collections.abc import Mapping, Sequence
from typing import Any

from dagster import MetadataValue


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
