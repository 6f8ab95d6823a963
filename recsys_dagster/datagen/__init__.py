"""The synthetic second-hand marketplace that fills the landing zone (no dagster import)."""

from recsys_dagster.datagen.faults import FAULT_KINDS
from recsys_dagster.datagen.generator import (
    DayData,
    DaySummary,
    GenerationSummary,
    GeneratorConfig,
    catalog_key,
    events_key,
    generate,
    simulate,
)

__all__ = [
    "FAULT_KINDS",
    "DayData",
    "DaySummary",
    "GenerationSummary",
    "GeneratorConfig",
    "catalog_key",
    "events_key",
    "generate",
    "simulate",
]
