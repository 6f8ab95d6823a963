"""Partitions: daily for ingestion/sessions, weekly (Monday..Sunday, UTC) for training."""


from datetime import timedelta

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping, WeeklyPartitionsDefinition

from recsys_dagster import settings

DAILY = DailyPartitionsDefinition(start_date=settings.start_date().isoformat(), timezone="UTC", end_offset=0)

# The first week starts a week after the data does, so it has a week of history behind it.
# day_offset=1: weeks start on Monday.
_first_monday = settings.start_date() + timedelta(days=(7 - settings.start_date().weekday()) % 7 + 7)
WEEKLY = WeeklyPartitionsDefinition(start_date=_first_monday.isoformat(), day_offset=1, timezone="UTC")

# sessions of day D read events of D-1 and D (a session crossing midnight stays whole).
PREVIOUS_AND_SAME_DAY = TimeWindowPartitionMapping(start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True)


def training_window_mapping() -> TimeWindowPartitionMapping:
    """Weekly partition W -> the daily partitions of the training window ending on W's Sunday."""
    weeks = -(-settings.training_window_days() // 7)
    return TimeWindowPartitionMapping(start_offset=-(weeks - 1), end_offset=0, allow_nonexistent_upstream_partitions=True)
