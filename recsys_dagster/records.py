"""Typed hand-offs: dataclasses that cross module boundaries and live in the lake as JSON.

`from_dict` fails loudly on a missing field (no silent 0.0 or None), and ignores fields
it does not know, so a newer writer does not break an older reader.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Self


class RecordError(ValueError):
    """A stored record lacks a field its reader needs."""


class Record:
    """Mixin for frozen dataclasses: `to_dict` / `to_json` / `from_dict` / `from_json`."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise RecordError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        required = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise RecordError(f"{cls.__name__}: missing field(s) {', '.join(missing)}")
        names = {f.name for f in fields}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        return cls.from_dict(json.loads(text))
