"""Landing-zone ingestion: validate events and catalog lines, write valid + quarantine.

Plain functions (no dagster); the ingest assets are thin adapters over them.
"""

from recsys_dagster.ingest.pipeline import (
    IngestError,
    IngestSummary,
    ingest_catalog_partition,
    ingest_events_partition,
    known_items,
)
from recsys_dagster.ingest.validate import (
    CATALOG_QUARANTINE_SCHEMA,
    CATALOG_REASONS,
    CATALOG_SCHEMA,
    EVENT_REASONS,
    EVENTS_QUARANTINE_SCHEMA,
    EVENTS_SCHEMA,
    ValidationResult,
    validate_catalog,
    validate_events,
)

__all__ = [
    "CATALOG_QUARANTINE_SCHEMA",
    "CATALOG_REASONS",
    "CATALOG_SCHEMA",
    "EVENT_REASONS",
    "EVENTS_QUARANTINE_SCHEMA",
    "EVENTS_SCHEMA",
    "IngestError",
    "IngestSummary",
    "ValidationResult",
    "ingest_catalog_partition",
    "ingest_events_partition",
    "known_items",
    "validate_catalog",
    "validate_events",
]
