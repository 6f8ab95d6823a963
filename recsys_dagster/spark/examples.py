"""The plain records of the training examples: their config, counts and summary.

No pyspark here, so the evaluation and the checks can read a week's summary without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from recsys_dagster.contract import EVENT_WEIGHTS, TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.records import Record
from recsys_dagster.settings import DEFAULT_TRAINING_WINDOW_DAYS, documented


@dataclass
class ExampleConfig:
    """How a week's training examples are built."""

    history_len: int = documented(50, "History items kept before each positive (what the user tower reads).")
    seen_limit: int = documented(
        500, "Most recent distinct items kept per user in user_seen, the items serving never recommends again."
    )
    negatives: int = documented(8, "Explicit negatives per example (K).")
    mix_popular: float = documented(0.5, "Share of negatives drawn by popularity^alpha.")
    mix_uniform: float = documented(0.25, "Share of negatives drawn uniformly from active items.")
    mix_hard: float = documented(0.25, "Share of negatives from the positive's own category leaf.")
    popularity_alpha: float = documented(0.75, "Exponent of the popularity sampler.")
    validation_days: int = documented(2, "Last days of the window before the test days, for validation.")
    test_days: int = documented(2, "Last days of the window, held out for the offline evaluation.")
    window_days: int = documented(DEFAULT_TRAINING_WINDOW_DAYS, "Days of sessions the week trains on.")
    seed: int = documented(13, "Seed of the negative sampler.")
    weights: dict[str, float] = field(
        default_factory=lambda: dict(EVENT_WEIGHTS), metadata={"doc": "Weight of a positive by event type."}
    )

    @property
    def mix(self) -> tuple[float, float, float]:
        """Shares of popular, uniform and hard negatives."""
        return (self.mix_popular, self.mix_uniform, self.mix_hard)

    def __post_init__(self) -> None:
        if self.history_len < 1 or self.negatives < 1:
            raise ValueError(f"history_len and negatives must be >= 1, got {self.history_len}, {self.negatives}")
        if self.seen_limit < 1:
            raise ValueError(f"seen_limit must be >= 1, got {self.seen_limit}")
        if len(self.mix) != 3 or any(m < 0 for m in self.mix) or abs(sum(self.mix) - 1.0) > 1e-6:
            raise ValueError(f"mix must be three non-negative fractions summing to 1, got {self.mix}")
        if self.validation_days < 1 or self.test_days < 1:
            raise ValueError("validation_days and test_days must be >= 1")
        if self.window_days <= self.validation_days + self.test_days:
            raise ValueError(
                f"window_days ({self.window_days}) must exceed validation_days + test_days "
                f"({self.validation_days + self.test_days}) to leave train days"
            )
        if self.popularity_alpha < 0:
            raise ValueError(f"popularity_alpha must be >= 0, got {self.popularity_alpha}")


@dataclass(frozen=True)
class ExampleCounts(Record):
    """What a set of written examples holds; the counts check recomputes it from the lake."""

    counts: dict[str, int]  # split -> rows
    negatives_per_row: int
    bad_negative_rows: int  # rows without exactly K negatives (and K kinds)
    negative_mix: dict[str, int]  # kind -> negatives
    users: int
    items: int
    active_items: int
    timestamp_ranges: dict[str, list[str | None]]  # split -> [min, max]


@dataclass(frozen=True)
class ExamplesSummary(ExampleCounts):
    """What `training_partition` wrote for a week (`training/week=W/summary.json`)."""

    week: str
    window: list[str]  # [first day, last day]
    window_days_present: list[str]
    catalog_days_present: list[str]
    split_ranges: dict[str, list[str]]  # split -> [first day, last day]
    files: dict[str, int]  # output -> files written


def write_summary(lake: Lake, summary: ExamplesSummary, cfg: ExampleConfig) -> None:
    """`training/week=W/summary.json`: what was written and the config it was built with
    (the checks judge the examples by that config, not by today's defaults)."""
    lake.write_json(
        f"{week_prefix(TRAINING, summary.week)}/summary.json", {"summary": summary.to_dict(), "config": asdict(cfg)}
    )


def read_summary(lake: Lake, week: str) -> tuple[ExamplesSummary, ExampleConfig]:
    saved = lake.read_json(f"{week_prefix(TRAINING, week)}/summary.json")
    return ExamplesSummary.from_dict(saved["summary"]), ExampleConfig(**saved["config"])
