"""The landing contract and the shared vocabulary of the pipeline (see docs/DESIGN.md; columns in docs/CONTRACTS.md).

Plain constants only, so that every stage (generator, ingestion, Spark, training,
serving) agrees on names without importing each other.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_favorites", "contact_seller", "purchase")
DEVICE_TYPES: tuple[str, ...] = ("mobile", "desktop", "tablet")
CONDITIONS: tuple[str, ...] = ("new", "like_new", "used", "for_parts")

# The data does not say: a landed `device_type` or catalog `condition` may be this value
# (e.g. imported logs without a device column). Kept out of DEVICE_TYPES / CONDITIONS: the
# model maps it to its unknown index like any value outside them.
UNKNOWN = "unknown"
LANDING_DEVICE_TYPES: tuple[str, ...] = (*DEVICE_TYPES, UNKNOWN)
LANDING_CONDITIONS: tuple[str, ...] = (*CONDITIONS, UNKNOWN)

# Default strength of an interaction, used to weight positives (configurable downstream).
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_favorites": 4.0,
    "contact_seller": 8.0,
    "purchase": 16.0,
}

# Required fields of a landed event and their JSON types.
EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "timestamp",
    "device_type",
)

CATALOG_FIELDS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "category_path",
    "price",
    "currency",
    "brand",
    "location",
    "condition",
    "image_url",
    "created_at",
)

# Why an event line is quarantined (the generator's fault kinds use the same names).
EVENT_QUARANTINE_REASONS: tuple[str, ...] = (
    "malformed_json",
    "not_an_object",
    "missing_field",
    "null_field",
    "wrong_type",
    "invalid_event_type",
    "invalid_device_type",
    "invalid_timestamp",
    "timestamp_outside_partition",
    "duplicate_event_id",
    "unknown_item",
)

CATEGORY_SEPARATOR = " > "

# Lake layout: relative prefixes under RECSYS_LAKE_URI.
LANDING_EVENTS = "landing/events"
LANDING_CATALOG = "landing/catalog"
EVENTS = "events"
QUARANTINE_EVENTS = "quarantine/events"
QUARANTINE_CATALOG = "quarantine/catalog"
CATALOG = "catalog"
SESSIONS = "sessions"
TRAINING = "training"
ARTIFACTS = "artifacts"
EVALUATION = "evaluation"
MODELS = "models"
PROMOTED = "promoted"
QUALITY = "quality"


def day_prefix(dataset: str, dt: str) -> str:
    """`events`, `2026-10-05` -> `events/dt=2026-10-05`."""
    return f"{dataset}/dt={dt}"


def week_prefix(dataset: str, week: str) -> str:
    """`training`, `2026-10-12` -> `training/week=2026-10-12`."""
    return f"{dataset}/week={week}"
