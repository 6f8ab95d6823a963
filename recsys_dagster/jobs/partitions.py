"""Partitions: daily for ingestion/sessions, weekly (Monday..Sunday, UTC) for training.

Built from the settings definitions.py read once (`settings.current()`).
"""

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping, WeeklyPartitionsDefinition

from recsys_dagster import settings


def first_week(start: date) -> date:
    """The first Monday a full week after `start`: the first week has a week of history."""
    return start + timedelta(days=(7 - start.weekday()) % 7 + 7)


def training_window_mapping(window_days: int) -> TimeWindowPartitionMapping:
    """Weekly partition W -> the daily partitions of the training window ending on W's Sunday."""
    weeks = -(-window_days // 7)
    return TimeWindowPartitionMapping(
        start_offset=-(weeks - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
    )


_settings = settings.current()
DAILY = DailyPartitionsDefinition(start_date=_settings.start_date.isoformat(), timezone="UTC", end_offset=0)
# day_offset=1: weeks start on Monday.
WEEKLY = WeeklyPartitionsDefinition(
    start_date=first_week(_settings.start_date).isoformat(), day_offset=1, timezone="UTC"
)
TRAINING_WINDOW_DAYS = _settings.training_window_days
TRAINING_WINDOW = training_window_mapping(TRAINING_WINDOW_DAYS)

# sessions of day D read events of D-1 and D (a session crossing midnight stays whole).
PREVIOUS_AND_SAME_DAY = TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
