"""Request bodies of the HTTP API, with limits taken from the settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_dagster.contract import CONDITIONS, DEVICE_TYPES
from recsys_dagster.serving.rerank import Filters

ItemId = Annotated[str, Field(min_length=1, max_length=256)]


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category_prefix: str | None = Field(default=None, min_length=1, max_length=512)
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    conditions: list[Literal[CONDITIONS]] | None = Field(default=None, min_length=1)  # type: ignore[valid-type]
    location: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _price_range(self) -> FiltersIn:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min}) must be <= price_max ({self.price_max})")
        return self

    def to_filters(self) -> Filters:
        return Filters(
            category_prefix=self.category_prefix,
            price_min=self.price_min,
            price_max=self.price_max,
            conditions=frozenset(self.conditions) if self.conditions is not None else None,
            location=self.location,
        )


def recommendation_request_model(max_k: int, max_recent_items: int) -> type[BaseModel]:
    """The POST /recommendations body; limits come from Settings, so the class is built per app."""

    class RecommendationRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        user_id: str = Field(min_length=1, max_length=128)
        recent_items: list[ItemId] | None = Field(
            default=None,
            max_length=max_recent_items,
            description=(
                "The user's recent item ids in time order: oldest first, most recent last (the order of "
                "the training histories). A repeated id counts at its last position; the most recent "
                "known items feed the model. When given, they replace the stored history and are never "
                "recommended back."
            ),
        )
        k: int = Field(default=10, ge=1, le=max_k)
        exclude_seen: bool = Field(
            default=True,
            description="Leave out what the user has seen: a known user's seen-set and history, and recent_items.",
        )
        filters: FiltersIn | None = None
        diversity_cap: int | None = Field(
            default=3,
            ge=1,
            description=(
                "At most this many items per leaf category at the head of the list; when that leaves fewer "
                "than k, the best capped-out items follow. null: no cap."
            ),
        )
        popularity_penalty: float = Field(default=0.0, ge=0, le=100)
        device: Literal[DEVICE_TYPES] | None = Field(  # type: ignore[valid-type]
            default=None, description="The client's device; omitted: the model's learned 'unknown device'."
        )
        hour: int | None = Field(
            default=None,
            ge=0,
            le=23,
            strict=True,
            description="Hour of the day of the request, 0..23 UTC; omitted: the model's learned 'unknown hour' "
            "(never the server's clock).",
        )

    return RecommendationRequest
