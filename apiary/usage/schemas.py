"""What the usage API answers: totals, series rows, and the comparison with a baseline model."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from pydantic import ConfigDict, Field

from apiary.kit.schemas import Schema


class UsageDimension(StrEnum):
    """What a series is grouped by: a UTC day, or one column of the ledger."""

    DAY = "day"
    MODEL = "model"
    PROVIDER = "provider"
    ROUTE = "route"
    API_KEY = "api_key"
    AGENT = "agent"


class UsageBucket(StrEnum):
    DAY = "day"


class UsageWindow(Schema):
    """The half-open time range [from, to) a report covers, in UTC."""

    model_config = ConfigDict(from_attributes=True, extra="forbid", validate_by_name=True)

    from_: dt.datetime = Field(alias="from")
    to: dt.datetime


class BaselineComparison(Schema):
    """What the compared calls would have cost had every one been sent to `model`.

    Compared calls are the priced chat calls: an unpriced call has no actual cost to compare
    with, and an embedding cannot be sent to a chat model. Gateway cache hits count with
    their tokens, as if they had been sent; provider-side prompt caching (`cached_tokens`) is
    priced at the baseline's cached-input price, since the baseline provider would cache the
    same prefixes. `savings_usd = cost_usd - actual_cost_usd`
    `= cache_savings_usd + routing_savings_usd`.
    """

    model: str = Field(description="The baseline as given: provider/model or a model name")
    compared_calls: int = Field(description="Priced chat calls, the ones compared")
    excluded_calls: int = Field(description="Calls left out: unpriced ones and embeddings")
    cost_usd: float = Field(description="What the compared calls would have cost on the baseline")
    actual_cost_usd: float = Field(description="What the compared calls did cost")
    savings_usd: float = Field(description="cost_usd - actual_cost_usd; negative when dearer")
    cache_savings_usd: float = Field(
        description="The part saved by gateway cache hits, valued at the baseline's prices"
    )
    routing_savings_usd: float = Field(
        description="The part saved by serving the other calls on the models chosen instead "
        "of the baseline (negative when they were dearer)"
    )


class UsageSummary(UsageWindow):
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(description="Prompt tokens read from the provider's cache")
    cost_usd: float = Field(description="Sum over priced calls; unpriced calls add nothing")
    unpriced_calls: int = Field(description="Calls to a model with no known price")
    cache_hits: int = Field(description="Calls answered from the gateway's cache")
    cache_hit_rate: float = Field(description="cache_hits / calls, 0 when there are no calls")
    saved_by_cache_usd: float = Field(
        description="What the cache hits would have cost on the model that first answered them"
    )
    baseline: BaselineComparison | None = None


class UsageSeriesRow(Schema):
    key: str | None = Field(
        description="The UTC date (YYYY-MM-DD) for group_by=day, else the grouped column's "
        "value (null when the calls had none)"
    )
    day: dt.date | None = Field(
        default=None, description="The UTC date, when rows are per day (group_by=day or bucket=day)"
    )
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    unpriced_calls: int
    cache_hits: int
    cache_hit_rate: float
    saved_by_cache_usd: float


class UsageSeries(UsageWindow):
    group_by: UsageDimension
    bucket: UsageBucket | None
    rows: list[UsageSeriesRow] = Field(description="Sorted by day, then key (nulls last)")


class LedgerRow(Schema):
    """One model call as the ledger recorded it."""

    id: uuid.UUID
    created_at: dt.datetime
    kind: str = Field(description="chat or embedding")
    requested_model: str = Field(description="What the caller asked for: a route or a model")
    route: str | None
    provider: str | None
    model: str | None = Field(description="The model that answered (null when none did)")
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = Field(description="Null when the model has no price")
    cache_hit: bool
    latency_ms: float
    fallback_path: list[str] = Field(description='"provider/model: why" for each target skipped')
    status: str = Field(description="ok or error")
    error: str | None
